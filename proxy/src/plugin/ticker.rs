//! The thread that advances the engine's epoch, which is how a plugin call past its CPU
//! budget gets interrupted (`epoch_interruption`, checked by the deadline callback).
//!
//! It ticks while plugin code may run and for [`QUIET_TICKS`] after the last call started,
//! then parks until the next call starts. An idle payproxy, or one serving only routes
//! without plugins, no longer wakes its CPU a thousand times a second (measured before: about
//! 915 wakeups a second per process at rest, each one a timer interrupt and two context
//! switches on the core that serves requests).
//!
//! A call is announced by [`Ticker::enter`] before any guest code runs and until it returns.
//! Parking cannot miss a call: the ticker says it is going to sleep (`awake = false`) and
//! then looks at the calls running, while a call is counted first and then looks at
//! `awake`. All four accesses are `SeqCst`, so in their single order either the ticker sees
//! the call (and keeps ticking) or the call sees the ticker asleep (and wakes it).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances; plugin deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without any call starting before the ticker parks (100 ms): steady traffic keeps it
/// ticking, so a call rarely pays for waking it (one `futex` call when it does).
pub const QUIET_TICKS: u32 = 100;

#[derive(Default)]
struct State {
    /// Calls (and instantiations) whose guest code may be running now.
    running: AtomicUsize,
    /// Set by every call, cleared by the ticker at each tick: whether one started since.
    active: AtomicBool,
    /// False while the ticker is parked or about to park.
    awake: AtomicBool,
    stop: AtomicBool,
    /// The ticker's kernel thread id, for tests that count its wakeups.
    tid: AtomicU64,
}

/// The epoch thread of one plugin host.
pub struct Ticker {
    state: Arc<State>,
    thread: Thread,
}

/// A call in progress: the ticker keeps ticking until it is dropped.
pub struct Running<'a>(&'a State);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl Ticker {
    /// Start ticking `engine`'s epoch.
    pub fn start(engine: Engine) -> std::io::Result<Ticker> {
        let state = Arc::new(State {
            awake: AtomicBool::new(true),
            ..State::default()
        });
        let shared = state.clone();
        let handle = std::thread::Builder::new()
            .name("payproxy-epoch".into())
            .spawn(move || tick(&engine, &shared))?;
        Ok(Ticker {
            state,
            thread: handle.thread().clone(),
        })
    }

    /// Announce a call into guest code; the returned guard ends it.
    pub fn enter(&self) -> Running<'_> {
        let state = &*self.state;
        state.running.fetch_add(1, SeqCst);
        state.active.store(true, Relaxed);
        // Read first: while the ticker is awake (under any load) a call writes nothing more.
        if !state.awake.load(SeqCst) && !state.awake.swap(true, SeqCst) {
            self.thread.unpark();
        }
        Running(state)
    }

    /// The ticker thread's kernel id (0 until it has started).
    pub fn tid(&self) -> u64 {
        self.state.tid.load(SeqCst)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, SeqCst);
        // Not joined (a host dropped on a runtime thread should not wait for a tick): the
        // thread sees `stop` within a tick and ends.
        self.thread.unpark();
    }
}

fn tick(engine: &Engine, state: &State) {
    state
        .tid
        .store(nix::unistd::gettid().as_raw() as u64, SeqCst);
    let mut quiet = 0;
    while !state.stop.load(SeqCst) {
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
        if state.active.swap(false, Relaxed) || state.running.load(SeqCst) > 0 {
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet < QUIET_TICKS {
            continue;
        }
        state.awake.store(false, SeqCst);
        if state.running.load(SeqCst) == 0 && !state.stop.load(SeqCst) {
            // Returns when a call unparks it (or spuriously, which only costs a loop).
            std::thread::park();
        }
        state.awake.store(true, SeqCst);
        quiet = 0;
    }
}
