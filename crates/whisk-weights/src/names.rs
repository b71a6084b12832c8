//! OpenAI's state-dict names, the canonical naming every reader maps onto.

use whisk_types::ModelDims;

/// Encoder or decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Encoder,
    Decoder,
}

/// `encoder.blocks.3` / `decoder.blocks.3`.
pub fn block_prefix(side: Side, layer: usize) -> String {
    match side {
        Side::Encoder => format!("encoder.blocks.{layer}"),
        Side::Decoder => format!("decoder.blocks.{layer}"),
    }
}

/// Every tensor a Whisper model needs, with its shape. Key biases are absent in OpenAI's
/// model (the key projection has none), so they are not required.
pub(crate) fn expected_shapes(d: &ModelDims) -> Vec<(String, Vec<usize>)> {
    let (ea, ta) = (d.n_audio_state, d.n_text_state);
    let mut out = vec![
        ("encoder.conv1.weight".into(), vec![ea, d.n_mels, 3]),
        ("encoder.conv1.bias".into(), vec![ea]),
        ("encoder.conv2.weight".into(), vec![ea, ea, 3]),
        ("encoder.conv2.bias".into(), vec![ea]),
        (
            "encoder.positional_embedding".into(),
            vec![d.n_audio_ctx, ea],
        ),
        ("encoder.ln_post.weight".into(), vec![ea]),
        ("encoder.ln_post.bias".into(), vec![ea]),
        ("decoder.token_embedding.weight".into(), vec![d.n_vocab, ta]),
        (
            "decoder.positional_embedding".into(),
            vec![d.n_text_ctx, ta],
        ),
        ("decoder.ln.weight".into(), vec![ta]),
        ("decoder.ln.bias".into(), vec![ta]),
    ];
    let mut attention = |p: &str, n: usize| {
        for proj in ["query", "key", "value", "out"] {
            out.push((format!("{p}.{proj}.weight"), vec![n, n]));
            if proj != "key" {
                out.push((format!("{p}.{proj}.bias"), vec![n]));
            }
        }
    };
    for i in 0..d.n_audio_layer {
        attention(&format!("{}.attn", block_prefix(Side::Encoder, i)), ea);
    }
    for i in 0..d.n_text_layer {
        attention(&format!("{}.attn", block_prefix(Side::Decoder, i)), ta);
        attention(
            &format!("{}.cross_attn", block_prefix(Side::Decoder, i)),
            ta,
        );
    }
    let mut block_rest = |p: String, n: usize, cross: bool| {
        let mut norms = vec!["attn_ln", "mlp_ln"];
        if cross {
            norms.push("cross_attn_ln");
        }
        for ln in norms {
            out.push((format!("{p}.{ln}.weight"), vec![n]));
            out.push((format!("{p}.{ln}.bias"), vec![n]));
        }
        out.push((format!("{p}.mlp.0.weight"), vec![4 * n, n]));
        out.push((format!("{p}.mlp.0.bias"), vec![4 * n]));
        out.push((format!("{p}.mlp.2.weight"), vec![n, 4 * n]));
        out.push((format!("{p}.mlp.2.bias"), vec![n]));
    };
    for i in 0..d.n_audio_layer {
        block_rest(block_prefix(Side::Encoder, i), ea, false);
    }
    for i in 0..d.n_text_layer {
        block_rest(block_prefix(Side::Decoder, i), ta, true);
    }
    out
}
