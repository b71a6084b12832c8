use half::{bf16, f16};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// int8 values with one scale per row.
    I8,
}

/// Elements of a tensor in the precision the checkpoint stored them.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// A CTranslate2 int8 matrix, kept as stored so that int8 compute uses it as it is:
    /// element `[r][c]` is `values[r][c] · row_scales[r]`.
    I8 {
        values: Vec<i8>,
        row_scales: Vec<f32>,
    },
}

/// A named weight: shape and row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I8 { .. } => DType::I8,
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I8 { values, .. } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements widened to `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::I8 { values, row_scales } => {
                let cols = values.len() / row_scales.len().max(1);
                values
                    .chunks(cols.max(1))
                    .zip(row_scales)
                    .flat_map(|(row, &s)| row.iter().map(move |&q| q as f32 * s))
                    .collect()
            }
        }
    }

    /// Rows `[start, end)` along the first axis, as a new tensor.
    pub(crate) fn slice_rows(&self, start: usize, end: usize) -> Tensor {
        let row: usize = self.shape[1..].iter().product();
        let (a, b) = (start * row, end * row);
        let data = match &self.data {
            TensorData::F32(v) => TensorData::F32(v[a..b].to_vec()),
            TensorData::F16(v) => TensorData::F16(v[a..b].to_vec()),
            TensorData::BF16(v) => TensorData::BF16(v[a..b].to_vec()),
            TensorData::I8 { values, row_scales } => TensorData::I8 {
                values: values[a..b].to_vec(),
                row_scales: row_scales[start..end].to_vec(),
            },
        };
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Tensor { shape, data }
    }

    /// True when every element is zero (CTranslate2 stores a zero key bias OpenAI lacks).
    pub(crate) fn is_all_zero(&self) -> bool {
        match &self.data {
            TensorData::F32(v) => v.iter().all(|x| *x == 0.0),
            TensorData::F16(v) => v.iter().all(|x| x.to_f32() == 0.0),
            TensorData::BF16(v) => v.iter().all(|x| x.to_f32() == 0.0),
            TensorData::I8 { values, .. } => values.iter().all(|&q| q == 0),
        }
    }
}
