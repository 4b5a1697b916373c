//! Files: safetensors checkpoints.

pub mod checkpoint;
