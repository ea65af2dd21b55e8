//! Hot loops that know arrays but not graphs, so they can be benchmarked and
//! replaced alone.

pub mod broadcast;
pub mod buffer_pool;
pub mod conv_blocks;
pub mod elementwise;
pub mod exp;
pub mod gemm;
pub mod im2col;
pub mod permute;
pub mod pool;
pub mod rnn;
pub mod rnn_sequence;
pub mod scratch;
#[cfg(target_arch = "x86_64")]
pub mod small_gemm;
