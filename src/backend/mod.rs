//! Backends execute primitive ops on realized values. `cpu` is the
//! executable specification; `gpu` runs the same ops as WGSL kernels.

pub mod cpu;
pub mod gpu;

use std::sync::Arc;

use crate::shape::Layout;
use crate::DType;

/// The memory of one buffer: on the host, or on a GPU.
#[derive(Debug)]
pub enum Storage {
    F32(Vec<f32>),
    I32(Vec<i32>),
    Gpu(gpu::GpuBuffer),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::I32(_) => DType::I32,
            Storage::Gpu(b) => b.dtype,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::I32(v) => v.len(),
            Storage::Gpu(b) => b.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A realized tensor: a shared buffer seen through a strided layout.
#[derive(Clone, Debug)]
pub struct Value {
    pub storage: Arc<Storage>,
    pub layout: Layout,
}

impl Value {
    pub fn f32(data: Vec<f32>, shape: &[usize]) -> Value {
        Value {
            storage: Arc::new(Storage::F32(data)),
            layout: Layout::contiguous(shape),
        }
    }

    pub fn i32(data: Vec<i32>, shape: &[usize]) -> Value {
        Value {
            storage: Arc::new(Storage::I32(data)),
            layout: Layout::contiguous(shape),
        }
    }

    /// A constant of `shape`: one element seen through stride 0, so a
    /// constant of any size costs one element.
    pub fn constant(v: f32, dtype: DType, shape: &[usize]) -> Value {
        let storage = match dtype {
            DType::F32 => Storage::F32(vec![v]),
            DType::I32 => Storage::I32(vec![v as i32]),
        };
        Value {
            storage: Arc::new(storage),
            layout: Layout {
                shape: shape.to_vec(),
                strides: vec![0; shape.len()],
                offset: 0,
            },
        }
    }

    /// The elements in row-major order (copies only when the layout is not dense).
    pub fn layout_gather<T: Copy + Send + Sync>(&self, data: &[T]) -> Vec<T> {
        cpu::strided_copy(data, &self.layout)
    }

    /// This value in host memory (downloaded when it lives on a GPU).
    pub fn to_host(&self) -> crate::Result<Value> {
        gpu::to_host(self)
    }

    pub fn is_on_gpu(&self) -> bool {
        matches!(self.storage.as_ref(), Storage::Gpu(_))
    }
}
