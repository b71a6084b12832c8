//! Silero VAD v6's 16 kHz network, written out over the weights of its ONNX file.
//!
//! Each 32 ms frame (512 samples, after the previous frame's last 64 as context) is reflected
//! 128 samples out at both ends, turned into a 129-bin magnitude spectrum at four 8 ms steps
//! (the STFT is a strided convolution with a fixed basis), and squeezed by four 3-tap
//! convolutions with ReLU into 128 features. Only an LSTM cell of 128 runs from frame to frame;
//! a 1×1 convolution and a sigmoid give the frame's speech probability. Everything before the
//! LSTM's recurrence is computed for all frames at once, in parallel.

use std::collections::BTreeMap;

use rayon::prelude::*;
use whisk_types::widest_lanes;

use crate::onnx::Initializer;

/// Samples in one frame at 16 kHz: one probability each.
pub const FRAME_SAMPLES: usize = 512;
/// Samples of the previous frame fed in front of each frame.
const CONTEXT: usize = 64;
const INPUT: usize = CONTEXT + FRAME_SAMPLES;
/// Reflection padding at both ends of a frame's input.
const REFLECT: usize = 128;
const FFT: usize = 256;
const HOP: usize = 128;
const BINS: usize = FFT / 2 + 1;
/// STFT positions kept: the strided convolution makes five; the model drops the first.
const STEPS: usize = 4;
const HIDDEN: usize = 128;
/// Frames per parallel task.
const TASK_FRAMES: usize = 32;

/// Plain `f32` in 8 lanes, so that it vectorises in the AVX2 builds below.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((acc, x), y) in acc.iter_mut().zip(x).zip(y) {
            *acc += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A 3-tap convolution with padding 1, followed by ReLU.
struct Conv {
    /// `[out][in × 3]`: each output's weights in the order of an input column.
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    stride: usize,
}

impl Conv {
    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `input` is `[inputs][len]`; returns `[outputs][out_len]` and `out_len`.
    #[inline(always)]
    fn forward(&self, input: &[f32], len: usize) -> (Vec<f32>, usize) {
        let out_len = (len + 2 - 3) / self.stride + 1;
        let mut column = vec![0f32; self.inputs * 3];
        let mut out = vec![0f32; self.outputs() * out_len];
        for p in 0..out_len {
            for i in 0..self.inputs {
                for k in 0..3 {
                    let x = (p * self.stride + k).checked_sub(1).filter(|&x| x < len);
                    column[i * 3 + k] = x.map_or(0.0, |x| input[i * len + x]);
                }
            }
            for o in 0..self.outputs() {
                let w = &self.weight[o * column.len()..(o + 1) * column.len()];
                out[o * out_len + p] = (self.bias[o] + dot(w, &column)).max(0.0);
            }
        }
        (out, out_len)
    }
}

/// Silero VAD v6 at 16 kHz.
pub struct SileroVad {
    /// `[2 × BINS][FFT]`: real parts' basis, then imaginary parts'.
    basis: Vec<f32>,
    convs: [Conv; 4],
    /// LSTM input and recurrent weights, `[4 × HIDDEN][HIDDEN]`, gates in ONNX's order
    /// (input, output, forget, cell); both biases summed.
    w: Vec<f32>,
    r: Vec<f32>,
    bias: Vec<f32>,
    out_weight: Vec<f32>,
    out_bias: f32,
}

/// Where the LSTM's three weights are, by the LSTM node's input names.
pub(crate) struct LstmNames {
    pub w: String,
    pub r: String,
    pub b: String,
}

impl SileroVad {
    pub(crate) fn from_initializers(
        mut inits: BTreeMap<String, Initializer>,
        lstm: &LstmNames,
    ) -> Result<Self, String> {
        let mut take = |name: &str, dims: &[usize]| -> Result<Vec<f32>, String> {
            let init = inits
                .remove(name)
                .ok_or_else(|| format!("missing weight `{name}`: not Silero VAD v6"))?;
            if init.dims != dims {
                return Err(format!(
                    "weight `{name}` has shape {:?}, expected {dims:?}: not Silero VAD v6",
                    init.dims
                ));
            }
            Ok(init.values)
        };
        let basis = take(
            "encoder.feature_extractor.forward_basis_buffer",
            &[2 * BINS, 1, FFT],
        )?;
        let shapes = [(BINS, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)];
        let mut convs = Vec::new();
        for (i, (inputs, outputs, stride)) in shapes.into_iter().enumerate() {
            let prefix = format!("encoder.conv_layers.{i}");
            convs.push(Conv {
                weight: take(&format!("{prefix}.weight"), &[outputs, inputs, 3])?,
                bias: take(&format!("{prefix}.bias"), &[outputs])?,
                inputs,
                stride,
            });
        }
        let w = take(&lstm.w, &[1, 4 * HIDDEN, HIDDEN])?;
        let r = take(&lstm.r, &[1, 4 * HIDDEN, HIDDEN])?;
        let b = take(&lstm.b, &[1, 8 * HIDDEN])?;
        let bias = (0..4 * HIDDEN).map(|i| b[i] + b[4 * HIDDEN + i]).collect();
        let out_weight = take("decoder.conv1d.weight", &[1, HIDDEN, 1])?;
        let out_bias = take("decoder.conv1d.bias", &[1])?[0];
        Ok(Self {
            basis,
            convs: convs.try_into().map_err(|_| "four convolutions")?,
            w,
            r,
            bias,
            out_weight,
            out_bias,
        })
    }

    /// The speech probability of every 512-sample frame of 16 kHz mono `samples`, computed as
    /// faster-whisper 1.2.1 does: the audio is padded with zeros to a whole number of frames
    /// (a whole frame more when it already is one), each frame sees the previous frame's last
    /// 64 samples (zeros before the first), and the last frame's own last 64 samples count as
    /// zeros (faster-whisper's context step writes them so).
    pub fn speech_probabilities(&self, samples: &[f32]) -> Vec<f32> {
        let frames = samples.len() / FRAME_SAMPLES + 1;
        let mut audio = samples.to_vec();
        audio.resize(frames * FRAME_SAMPLES, 0.0);
        audio[frames * FRAME_SAMPLES - CONTEXT..].fill(0.0);
        let gates: Vec<f32> = (0..frames)
            .collect::<Vec<_>>()
            .par_chunks(TASK_FRAMES)
            .flat_map_iter(|chunk| input_gates_fast(self, &audio, chunk))
            .collect();
        recurrence_fast(self, &gates)
    }

    fn w_row(&self, gate: usize) -> &[f32] {
        &self.w[gate * HIDDEN..(gate + 1) * HIDDEN]
    }

    /// The 128 features the convolutions make of one frame's input.
    #[inline(always)]
    fn features(&self, input: &[f32; INPUT]) -> Vec<f32> {
        let padded = reflect(input);
        let mut spectrum = vec![0f32; BINS * STEPS];
        for t in 0..STEPS {
            let start = (t + 1) * HOP;
            let segment = &padded[start..start + FFT];
            for bin in 0..BINS {
                let re = dot(&self.basis[bin * FFT..(bin + 1) * FFT], segment);
                let im_row = (BINS + bin) * FFT;
                let im = dot(&self.basis[im_row..im_row + FFT], segment);
                spectrum[bin * STEPS + t] = (re * re + im * im).sqrt();
            }
        }
        let (mut x, mut len) = (spectrum, STEPS);
        for conv in &self.convs {
            (x, len) = conv.forward(&x, len);
        }
        debug_assert_eq!((x.len(), len), (HIDDEN, 1));
        x
    }
}

widest_lanes!(input_gates_fast => input_gates(vad: &SileroVad, audio: &[f32], frames: &[usize]) -> Vec<f32>);
widest_lanes!(recurrence_fast => recurrence(vad: &SileroVad, gates: &[f32]) -> Vec<f32>);

/// The LSTM's input-side gate sums (`W·x + b`) of each of `frames`, one after another.
#[inline(always)]
fn input_gates(vad: &SileroVad, audio: &[f32], frames: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(frames.len() * 4 * HIDDEN);
    for &frame in frames {
        let features = vad.features(&frame_input(audio, frame));
        out.extend((0..4 * HIDDEN).map(|g| vad.bias[g] + dot(vad.w_row(g), &features)));
    }
    out
}

/// The LSTM run over every frame's input gates, and each frame's speech probability.
#[inline(always)]
fn recurrence(vad: &SileroVad, gates: &[f32]) -> Vec<f32> {
    let (mut h, mut c) = ([0f32; HIDDEN], [0f32; HIDDEN]);
    gates
        .chunks_exact(4 * HIDDEN)
        .map(|input_gates| {
            let g: Vec<f32> = (0..4 * HIDDEN)
                .map(|j| input_gates[j] + dot(&vad.r[j * HIDDEN..(j + 1) * HIDDEN], &h))
                .collect();
            for k in 0..HIDDEN {
                let input = sigmoid(g[k]);
                let output = sigmoid(g[HIDDEN + k]);
                let forget = sigmoid(g[2 * HIDDEN + k]);
                let cell = g[3 * HIDDEN + k].tanh();
                c[k] = forget * c[k] + input * cell;
                h[k] = output * c[k].tanh();
            }
            let relu_h: Vec<f32> = h.iter().map(|&x| x.max(0.0)).collect();
            sigmoid(dot(&vad.out_weight, &relu_h) + vad.out_bias)
        })
        .collect()
}

/// Frame `frame`'s input: the previous frame's last 64 samples (zeros for the first), then its
/// own 512.
fn frame_input(audio: &[f32], frame: usize) -> [f32; INPUT] {
    let mut input = [0f32; INPUT];
    let start = frame * FRAME_SAMPLES;
    if frame > 0 {
        input[..CONTEXT].copy_from_slice(&audio[start - CONTEXT..start]);
    }
    input[CONTEXT..].copy_from_slice(&audio[start..start + FRAME_SAMPLES]);
    input
}

/// ONNX's reflect padding (the edge sample not repeated) of `REFLECT` at both ends.
fn reflect(input: &[f32; INPUT]) -> Vec<f32> {
    let last = INPUT - 1;
    (0..INPUT + 2 * REFLECT)
        .map(|k| {
            let i = k as isize - REFLECT as isize;
            let i = if i < 0 {
                (-i) as usize
            } else if i as usize > last {
                2 * last - i as usize
            } else {
                i as usize
            };
            input[i]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_mirrors_without_repeating_the_edge() {
        let mut input = [0f32; INPUT];
        for (i, x) in input.iter_mut().enumerate() {
            *x = i as f32;
        }
        let padded = reflect(&input);
        assert_eq!(padded.len(), 832);
        assert_eq!(&padded[..3], &[128.0, 127.0, 126.0]);
        assert_eq!(padded[REFLECT], 0.0);
        assert_eq!(padded[REFLECT + INPUT - 1], 575.0);
        assert_eq!(&padded[829..], &[449.0, 448.0, 447.0]);
    }

    #[test]
    fn a_frame_sees_the_previous_frames_last_samples() {
        let audio: Vec<f32> = (0..3 * FRAME_SAMPLES).map(|i| i as f32).collect();
        assert!(frame_input(&audio, 0)[..CONTEXT].iter().all(|&x| x == 0.0));
        let second = frame_input(&audio, 1);
        assert_eq!(second[0], 448.0);
        assert_eq!(second[CONTEXT], 512.0);
        assert_eq!(second[INPUT - 1], 1023.0);
    }

    #[test]
    fn dot_handles_every_tail_length() {
        for n in 0..20 {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
            let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), exact, "{n}");
        }
    }

    #[test]
    fn convolution_pads_and_strides() {
        // One input channel [1, 2, 3, 4], weights [1, 10, 100], stride 2: positions 0 and 2.
        let conv = Conv {
            weight: vec![1.0, 10.0, 100.0],
            bias: vec![0.5],
            inputs: 1,
            stride: 2,
        };
        let (out, len) = conv.forward(&[1.0, 2.0, 3.0, 4.0], 4);
        assert_eq!(len, 2);
        assert_eq!(out, [0.5 + 10.0 + 200.0, 0.5 + 2.0 + 30.0 + 400.0]);
    }
}
