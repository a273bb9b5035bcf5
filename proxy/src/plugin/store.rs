//! Per-instance store state: the memory limiter and the stand-in RNG.

use wasmtime::ResourceLimiter;

/// Data held by each plugin instance's `Store`.
pub struct CallState {
    /// Enforces the plugin's memory cap and remembers that it was hit.
    pub limiter: Limiter,
    /// State of the deterministic stand-in for `wasi:random`.
    pub rng: u64,
}

impl CallState {
    /// Fresh state for an instance capped at `memory_bytes`.
    pub fn new(memory_bytes: usize) -> CallState {
        CallState {
            limiter: Limiter {
                memory_bytes,
                hit: false,
            },
            rng: 0x853c_49e6_748f_ea9b,
        }
    }
}

/// Refuses memory growth past the cap and records the refusal, so a trap that follows
/// (Rust aborts on allocation failure) is reported as a memory failure.
pub struct Limiter {
    memory_bytes: usize,
    /// Set when a grow was refused.
    pub hit: bool,
}

/// Table elements any plugin may have; generous for Rust guests, bounded for hostile ones.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
