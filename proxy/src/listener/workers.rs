//! The serving threads: `runtime.worker_threads` of them, each running a single-threaded Tokio
//! runtime with its own accept loop on every storefront listener (one descriptor per thread
//! for the same listening socket; whichever thread is free takes a new connection).
//!
//! A connection stays on the thread that accepted it, and so do its requests' plugin calls,
//! memory-store calls and provider exchanges (provider connections are pooled per thread).
//! They never wait for a work-stealing scheduler's bookkeeping or for another serving
//! thread to wake; this is nginx's worker model (the measured gain: docs/benchmarks.md).
//! What still leaves the thread: redb calls go to the store's writer thread (which answers
//! each batch's calls from one thread with one wake of it), PostgreSQL calls and long reads
//! to the blocking pool.
//!
//! The control plane (admin listener, reloads, webhook delivery, sweeps, health checks) stays
//! on the runtime that started the proxy.

use std::future::Future;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context as _};
use tokio::sync::{oneshot, watch};

use super::until_true;

/// How long a serving thread's runtime waits for its blocking calls when the thread ends.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// The period of [`anchor_the_timers`]: a timer due later than this after it is set seldom
/// wakes its thread's event loop when set.
const TIMER_ANCHOR: std::time::Duration = std::time::Duration::from_millis(500);

/// Keep a timer due within [`TIMER_ANCHOR`] on this thread's runtime, always.
///
/// Setting a timer that is due before every timer the runtime's time driver last saw wakes
/// the driver (a write to its eventfd, and one more turn of its event loop), even when the
/// timer is set on the driver's own thread and the thread is busy: the driver must shorten
/// its next sleep. The driver learns what is due next only when it sleeps or fires timers,
/// so a provider timeout or header-read timeout set since then can count as the earliest
/// (all of them, when it last slept with no timer pending). On the redb chain, whose thread
/// sleeps while every payment waits for the store's writer, about 2.7 of a payment's timers
/// woke the driver (`perf stat`: 3.76 `write` calls per payment, 1.09 with this anchor, of
/// which one is the audit line; the memory-store chain, whose thread always has payments at
/// their provider, had none to lose). With a timer always due at most this period ahead, a
/// later one seldom counts as the earliest; the price is this task waking its thread twice
/// a second.
async fn anchor_the_timers() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Running serving threads.
pub struct Workers {
    threads: Vec<Worker>,
    /// Flipped once every thread has drained: the threads then end, and their runtimes drop
    /// what is left on them (pooled provider connections, detached tasks).
    release: watch::Sender<bool>,
}

struct Worker {
    /// Fires (or is dropped) when the thread's serving future has ended.
    served: oneshot::Receiver<()>,
    thread: JoinHandle<()>,
}

impl Workers {
    /// Start one thread per seed. Each thread builds its runtime, calls its seed inside it
    /// (where it registers its listeners and spawns its accept loops) and runs the future the
    /// seed returns until it ends. Returns once every seed has run: an error if a thread or
    /// its runtime cannot start, or a seed fails.
    pub async fn start<S, F>(seeds: Vec<S>) -> anyhow::Result<Workers>
    where
        S: FnOnce() -> anyhow::Result<F> + Send + 'static,
        F: Future<Output = ()> + 'static,
    {
        let (release, released) = watch::channel(false);
        let mut workers = Workers {
            threads: Vec::with_capacity(seeds.len()),
            release,
        };
        let mut ready = Vec::with_capacity(seeds.len());
        for (index, seed) in seeds.into_iter().enumerate() {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (served_tx, served) = oneshot::channel();
            let mut released = released.clone();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!("cannot start its runtime: {e}")));
                            return;
                        }
                    };
                    let serving = {
                        let _inside = runtime.enter();
                        // The store's writer answers this thread's calls with one wake
                        // per batch; its answers go to payments, so they go first too.
                        tokio::spawn(super::priority::ahead(crate::store::deliver_answers_here()));
                        // Setting a timer seldom wakes this thread's event loop.
                        tokio::spawn(anchor_the_timers());
                        seed()
                    };
                    let serving = match serving {
                        Ok(serving) => serving,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    runtime.block_on(async move {
                        serving.await;
                        let _ = served_tx.send(());
                        until_true(&mut released).await;
                    });
                    // A blocking call still running (a DNS lookup, a database call) is not
                    // waited for without bound: the process is on its way out.
                    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
                })
                .with_context(|| format!("cannot start serving thread {index}"))?;
            workers.threads.push(Worker { served, thread });
            ready.push(ready_rx);
        }
        for (index, ready) in ready.into_iter().enumerate() {
            match ready.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context(format!("serving thread {index}"))),
                Err(_) => return Err(anyhow!("serving thread {index} ended while starting")),
            }
        }
        Ok(workers)
    }

    /// How many threads serve.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether no thread serves.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Wait until every thread's serving future has ended (their listeners have drained, which
    /// their owner starts), then for `settle` (work the threads still run, such as payments
    /// whose connection has gone), then let the threads end and wait for them.
    pub async fn stop(mut self, settle: impl Future<Output = ()>) {
        for worker in &mut self.threads {
            // A thread that panicked drops its sender: it serves nothing either.
            let _ = (&mut worker.served).await;
        }
        settle.await;
        self.release.send_replace(true);
        let threads: Vec<_> = self.threads.into_iter().map(|w| w.thread).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for (index, thread) in threads.into_iter().enumerate() {
                if thread.join().is_err() {
                    tracing::error!(thread = index, "a serving thread panicked");
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn each_seed_runs_on_its_own_thread_until_stopped() {
        let (stop, stopped) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seeds = (0..3)
            .map(|_| {
                let (seen, mut stopped) = (seen.clone(), stopped.clone());
                move || {
                    // Inside the thread's runtime: spawning works.
                    let task = tokio::spawn(async { std::thread::current().id() });
                    Ok(async move {
                        let id = task.await.unwrap();
                        seen.lock().unwrap().push(id);
                        until_true(&mut stopped).await;
                    })
                }
            })
            .collect();
        let workers = Workers::start(seeds).await.unwrap();
        assert_eq!(workers.len(), 3);
        stop.send_replace(true);
        workers.stop(async {}).await;
        let seen: std::collections::HashSet<_> = seen.lock().unwrap().iter().copied().collect();
        assert!(!seen.contains(&std::thread::current().id()));
        assert_eq!(seen.len(), 3, "one thread each");
    }

    #[tokio::test]
    async fn a_failing_seed_fails_the_start() {
        let seeds: Vec<Box<dyn FnOnce() -> anyhow::Result<std::future::Ready<()>> + Send>> = vec![
            Box::new(|| Ok(std::future::ready(()))),
            Box::new(|| Err(anyhow!("cannot listen"))),
        ];
        let err = Workers::start(seeds).await.err().expect("start fails");
        assert_eq!(format!("{err:#}"), "serving thread 1: cannot listen");
    }
}
