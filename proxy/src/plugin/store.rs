//! Per-instance store state: the memory limiter, the CPU budget and the stand-in RNG.

use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};
use wasmtime::{ResourceLimiter, StoreContextMut, UpdateDeadline};

/// Data held by each plugin instance's `Store`.
pub struct CallState {
    /// Enforces the plugin's memory cap and remembers that it was hit.
    pub limiter: Limiter,
    /// State of the deterministic stand-in for `wasi:random`.
    pub rng: u64,
    /// CPU budget of the current call.
    pub budget: Budget,
}

/// A per-call CPU budget enforced through epoch interruption.
///
/// Epochs tick on wall-clock time, so a plugin descheduled by a busy machine would look
/// slow. Instead of trapping at the first expired tick, the deadline callback checks the
/// CPU time this thread actually spent in the call and only traps once the budget is used
/// up (or a generous wall-clock cap passes, so nothing runs unbounded).
pub struct Budget {
    cpu: Duration,
    wall_cap: Duration,
    started: Instant,
    // Thread CPU time at the first deadline check. Reading the CPU clock is a system call,
    // so it is not read on the fast path: a call that ends within its first epoch tick
    // never reads it, and the time before the first check (at most about one tick) is
    // charged as if it had all been CPU.
    cpu_base: Option<(Duration, Duration)>,
}

impl Budget {
    fn new(cpu: Duration) -> Budget {
        Budget {
            cpu,
            wall_cap: (cpu * 10).max(Duration::from_secs(1)),
            started: Instant::now(),
            cpu_base: None,
        }
    }

    /// Start a call with this CPU budget.
    pub fn arm(&mut self, cpu: Duration) {
        *self = Budget::new(cpu);
    }

    /// CPU spent so far: CPU since the first check plus the time before it, capped at one
    /// epoch tick (a thread descheduled before the first check is not charged for it).
    fn used(&mut self) -> Duration {
        let now = thread_cpu();
        let (base, before) = *self
            .cpu_base
            .get_or_insert_with(|| (now, self.started.elapsed().min(super::EPOCH_TICK)));
        before + now.saturating_sub(base)
    }
}

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// The epoch deadline callback: continue tick by tick until the CPU budget is spent.
pub fn on_deadline(mut cx: StoreContextMut<'_, CallState>) -> wasmtime::Result<UpdateDeadline> {
    let budget = &mut cx.data_mut().budget;
    if budget.used() >= budget.cpu || budget.started.elapsed() >= budget.wall_cap {
        return Ok(UpdateDeadline::Interrupt);
    }
    Ok(UpdateDeadline::Continue(1))
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
            budget: Budget::new(Duration::ZERO),
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
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
