//! Just enough of ONNX's protobuf encoding to read a model's float initializers by name: no
//! generated code, no `protoc`. The graph itself is not interpreted; the network is written out
//! in `silero.rs`.

use std::collections::BTreeMap;

/// A float32 initializer: its dimensions and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
}

/// ModelProto.graph, GraphProto's nodes and initializers, and the fields read from them.
const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
const NODE_INPUT: u64 = 1;
const NODE_OP_TYPE: u64 = 4;
const TENSOR_DIMS: u64 = 1;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_FLOAT_DATA: u64 = 4;
const TENSOR_NAME: u64 = 8;
const TENSOR_RAW_DATA: u64 = 9;
const DATA_TYPE_FLOAT: u64 = 1;

/// One field of a protobuf message.
enum Value<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
    Fixed64,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.data.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or("field runs past the end of its message")?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next (field number, value), or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.pos == self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(self.take(4)?.try_into().expect("four bytes")),
            wire => return Err(format!("unsupported protobuf wire type {wire}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

/// Every message of field `number` inside `message`.
fn submessages(message: &[u8], number: u64) -> Result<Vec<&[u8]>, String> {
    let mut reader = Reader::new(message);
    let mut out = Vec::new();
    while let Some((field, value)) = reader.field()? {
        if let (true, Value::Bytes(bytes)) = (field == number, value) {
            out.push(bytes);
        }
    }
    Ok(out)
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("four bytes")))
        .collect()
}

/// Name and contents of one TensorProto, or `None` for a tensor that is not float32.
fn tensor(message: &[u8]) -> Result<Option<(String, Initializer)>, String> {
    let mut reader = Reader::new(message);
    let (mut name, mut dims, mut values) = (String::new(), Vec::new(), Vec::new());
    let mut data_type = 0;
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (TENSOR_DIMS, Value::Varint(d)) => dims.push(d as usize),
            (TENSOR_DIMS, Value::Bytes(packed)) => {
                let mut r = Reader::new(packed);
                while r.pos < packed.len() {
                    dims.push(r.varint()? as usize);
                }
            }
            (TENSOR_DATA_TYPE, Value::Varint(t)) => data_type = t,
            (TENSOR_NAME, Value::Bytes(b)) => name = String::from_utf8_lossy(b).into_owned(),
            (TENSOR_RAW_DATA | TENSOR_FLOAT_DATA, Value::Bytes(b)) => values.extend(floats(b)),
            (TENSOR_FLOAT_DATA, Value::Fixed32(b)) => values.push(f32::from_le_bytes(b)),
            _ => {}
        }
    }
    if data_type != DATA_TYPE_FLOAT {
        return Ok(None);
    }
    let len: usize = dims.iter().product();
    if values.len() != len {
        return Err(format!(
            "tensor `{name}` has {} values for shape {dims:?}",
            values.len()
        ));
    }
    Ok(Some((name, Initializer { dims, values })))
}

fn graph(model: &[u8]) -> Result<&[u8], String> {
    match submessages(model, MODEL_GRAPH)?.as_slice() {
        [graph] => Ok(graph),
        _ => Err("not an ONNX model: expected one graph".into()),
    }
}

/// The input names of every node of type `op_type`, in graph order.
pub fn node_inputs(model: &[u8], op_type: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    for node in submessages(graph(model)?, GRAPH_NODE)? {
        let mut reader = Reader::new(node);
        let (mut op, mut inputs) = (String::new(), Vec::new());
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (NODE_INPUT, Value::Bytes(b)) => inputs.push(String::from_utf8_lossy(b).into()),
                (NODE_OP_TYPE, Value::Bytes(b)) => op = String::from_utf8_lossy(b).into(),
                _ => {}
            }
        }
        if op == op_type {
            out.push(inputs);
        }
    }
    Ok(out)
}

/// The float32 initializers of an ONNX model file's graph, by name.
pub fn float_initializers(model: &[u8]) -> Result<BTreeMap<String, Initializer>, String> {
    let graph = graph(model)?;
    let mut out = BTreeMap::new();
    for message in submessages(graph, GRAPH_INITIALIZER)? {
        if let Some((name, init)) = tensor(message)? {
            out.insert(name, init);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn tensor_message(name: &str, dims: &[u64], values: &[f32], packed: bool) -> Vec<u8> {
        let mut t = Vec::new();
        if packed {
            let mut d = Vec::new();
            dims.iter().for_each(|&x| varint(x, &mut d));
            bytes_field(TENSOR_DIMS, &d, &mut t);
        } else {
            for &x in dims {
                varint(TENSOR_DIMS << 3, &mut t);
                varint(x, &mut t);
            }
        }
        varint(TENSOR_DATA_TYPE << 3, &mut t);
        varint(DATA_TYPE_FLOAT, &mut t);
        bytes_field(TENSOR_NAME, name.as_bytes(), &mut t);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes_field(TENSOR_RAW_DATA, &raw, &mut t);
        t
    }

    #[test]
    fn reads_float_initializers_in_packed_and_plain_layouts() {
        let mut graph = Vec::new();
        let a = tensor_message("a", &[2, 3], &[1.0, -2.0, 3.5, 0.0, 1e-8, 7.0], true);
        bytes_field(GRAPH_INITIALIZER, &a, &mut graph);
        let b = tensor_message("b", &[1], &[0.25], false);
        bytes_field(GRAPH_INITIALIZER, &b, &mut graph);
        let mut model = Vec::new();
        varint(1 << 3, &mut model); // ir_version, skipped
        varint(8, &mut model);
        bytes_field(MODEL_GRAPH, &graph, &mut model);
        let inits = float_initializers(&model).unwrap();
        assert_eq!(inits["a"].dims, [2, 3]);
        assert_eq!(inits["a"].values[2], 3.5);
        assert_eq!(inits["b"].values, [0.25]);
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let a = tensor_message("a", &[4], &[1.0, 2.0, 3.0, 4.0], true);
        let mut graph = Vec::new();
        bytes_field(GRAPH_INITIALIZER, &a, &mut graph);
        let mut model = Vec::new();
        bytes_field(MODEL_GRAPH, &graph, &mut model);
        for cut in 1..model.len() {
            let _ = float_initializers(&model[..cut]);
        }
        assert!(float_initializers(&model[..model.len() - 3]).is_err());
        assert!(float_initializers(b"not onnx at all").is_err());
        let wrong = tensor_message("a", &[5], &[1.0], true);
        let mut graph = Vec::new();
        bytes_field(GRAPH_INITIALIZER, &wrong, &mut graph);
        let mut model = Vec::new();
        bytes_field(MODEL_GRAPH, &graph, &mut model);
        assert!(float_initializers(&model).unwrap_err().contains("1 values"));
    }
}
