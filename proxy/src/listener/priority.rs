//! Payments first on a serving thread.
//!
//! A serving thread runs, as tasks of one single-threaded runtime, every connection it accepted
//! and every payment those connections started, and its runtime polls ready tasks in the order
//! they became ready. Without more, a payment shared its thread by count of ready tasks: each
//! time its provider or the store's writer answered, it waited behind every connection that had
//! work; and the store's writer, which runs below the serving threads' priority, got the core
//! only in the scheduler's turns. Beside a flood of pass-through requests on 64 connections, 8
//! payment connections on the redb store made about 500 payments a second instead of 3,000
//! (docs/benchmarks.md, "Payments beside a flood").
//!
//! So a payment's task ([`ahead`]) counts itself in its thread's [`Lane`] from the moment it is
//! woken until it is polled, and a connection's task or an HTTP/2 stream's task ([`behind`])
//! whose latest request was a pass-through one, polled while that count is not zero, gives
//! way: it leaves its waker with the lane and is woken again, in the order it gave way, once
//! the last ready payment has been polled. (A connection carrying payments goes on: with every
//! connection giving way, payments alone made 0.70–0.78× as many.) And a
//! pass-through request started while a payment of the thread waits for the store's writer
//! ([`on_the_writer`]) first yields the core ([`pass_through`]), which the writer may take if it
//! shares the core and has work. Either alone left the payments where they were.
//!
//! A connection gives way for at most [`MOST_GIVEN_WAY`] at a time: payments that keep coming
//! (connections carrying payments never give way, and keep letting new ones in) hold a
//! pass-through request back by that much per step, not for as long as they come. A payment
//! whose poll panics still releases the connections that gave way to it, when its task drops.
//!
//! Not behind the payments: the tasks that carry their provider exchanges (provider
//! connections) and the control plane, which runs on another runtime.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

/// One serving thread's ready payments and the tasks waiting for them.
#[derive(Debug, Default)]
struct Lane {
    /// Payment tasks woken (or spawned) and not polled since.
    ready: AtomicUsize,
    /// The tasks that gave way.
    waiting: Mutex<Waiting>,
    /// Whether `waiting` may hold a waker: spares a payment's poll the lock when none does.
    held_back: AtomicBool,
    /// How many times `waiting` was emptied: a task that gave way since holds a place there.
    releases: AtomicU64,
    /// Payments waiting for the store's writer.
    on_the_writer: AtomicUsize,
}

/// The tasks that gave way to the payments.
#[derive(Debug, Default)]
struct Waiting {
    /// Their wakers, in the order they gave way.
    wakers: Vec<Waker>,
    /// When the first of them gave way.
    since: Option<Instant>,
}

/// The longest a connection gives way to payments at a time: then it takes a turn, even if
/// payments are still ready. Under payments that keep coming a connection would otherwise
/// wait for as long as they do.
pub const MOST_GIVEN_WAY: Duration = Duration::from_millis(10);

thread_local! {
    static LANE: Arc<Lane> = Arc::new(Lane::default());
    /// What the request polled last on this thread said it is ([`pass_through`] or
    /// [`payment`]), for the task polling it to read.
    static SEEN: Cell<Option<bool>> = const { Cell::new(None) };
}

impl Lane {
    /// The calling thread's lane.
    fn here() -> Arc<Lane> {
        LANE.with(Arc::clone)
    }

    /// Once no payment is ready, or the first task that gave way has waited
    /// [`MOST_GIVEN_WAY`], wake every task that gave way, in order.
    fn release(&self) {
        if !self.held_back.load(Ordering::SeqCst) {
            return;
        }
        let wakers = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let long = waiting
                .since
                .is_some_and(|since| since.elapsed() >= MOST_GIVEN_WAY);
            if self.ready.load(Ordering::SeqCst) != 0 && !long {
                return;
            }
            self.held_back.store(false, Ordering::SeqCst);
            self.releases.fetch_add(1, Ordering::SeqCst);
            waiting.since = None;
            std::mem::take(&mut waiting.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// While the guard lives, a payment of this thread waits for the store's writer: pass-through
/// requests started here meanwhile let the writer have the core first ([`pass_through`]).
pub fn on_the_writer() -> OnTheWriter {
    let lane = Lane::here();
    lane.on_the_writer.fetch_add(1, Ordering::Relaxed);
    OnTheWriter(lane)
}

/// See [`on_the_writer`].
#[derive(Debug)]
pub struct OnTheWriter(Arc<Lane>);

impl Drop for OnTheWriter {
    fn drop(&mut self) {
        self.0.on_the_writer.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Called as a pass-through request starts: while a payment of this thread waits for the
/// store's writer, give the writer the core first if it shares this one and has work.
///
/// The writer runs at a lower priority than the serving threads (so that, on a core it shares
/// with them, it takes larger batches while they parse the next payments): beside a flood of
/// pass-through requests it got the core only in the scheduler's turns, and each of a
/// payment's three store calls waited for one.
pub fn pass_through() {
    SEEN.set(Some(true));
    if LANE.with(|lane| lane.on_the_writer.load(Ordering::Relaxed)) != 0 {
        std::thread::yield_now();
    }
}

/// Called as a payment-route request (or a provider's notification) starts: its connection's
/// task goes on its way while other payments are ready, as it carries payments too.
pub fn payment() {
    SEEN.set(Some(false));
}

/// A payment's task: polled ahead of the connections of the thread that made it.
pub fn ahead<F: Future>(inner: F) -> Ahead<F> {
    let lane = Lane::here();
    // A task is ready when spawned.
    lane.ready.fetch_add(1, Ordering::SeqCst);
    Ahead {
        inner,
        mark: Arc::new(Mark {
            lane,
            state: AtomicU8::new(QUEUED),
            task: AtomicWaker::new(),
        }),
        waker: None,
    }
}

/// A connection's (or an HTTP/2 stream's) task: once it has served a pass-through request, and
/// until it serves a payment, it gives way to its thread's ready payments.
pub fn behind<F: Future>(inner: F) -> Behind<F> {
    Behind {
        inner,
        lane: Lane::here(),
        pass_through: false,
        giving_way: None,
    }
}

pin_project_lite::pin_project! {
    /// See [`ahead`].
    pub struct Ahead<F> {
        #[pin]
        inner: F,
        mark: Arc<Mark>,
        // The waker the inner future sees: it counts the task in the lane, then wakes it.
        waker: Option<Waker>,
    }

    impl<F> PinnedDrop for Ahead<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped while counted (cancelled, or its runtime shut down): count it out.
            // Woken after this, it stays out: nothing would poll it again. Released in any
            // case: dropped after a poll that panicked, it was counted out before the poll
            // and never got to release the tasks that gave way to it.
            let mark = &this.mark;
            if mark.state.swap(DONE, Ordering::SeqCst) == QUEUED {
                mark.lane.ready.fetch_sub(1, Ordering::SeqCst);
            }
            mark.lane.release();
        }
    }
}

/// A payment task's marks: not counted in its lane, counted, or finished (dropped).
const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const DONE: u8 = 2;

/// A payment task's place in its lane.
#[derive(Debug)]
struct Mark {
    lane: Arc<Lane>,
    /// [`IDLE`], [`QUEUED`] (counted in `lane.ready`: woken and not polled since) or [`DONE`].
    state: AtomicU8,
    /// The runtime's waker for the task.
    task: AtomicWaker,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Counted before it is marked: a poll on the serving thread that takes the mark
        // then finds the count it takes back (a wake from another thread can race one).
        self.lane.ready.fetch_add(1, Ordering::SeqCst);
        let woken = self
            .state
            .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst);
        if woken.is_err() {
            // Counted already, or ended.
            self.lane.ready.fetch_sub(1, Ordering::SeqCst);
            self.lane.release();
        }
        self.task.wake();
    }
}

impl<F: Future> Future for Ahead<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mark = &**this.mark;
        mark.task.register(cx.waker());
        let polled = mark
            .state
            .compare_exchange(QUEUED, IDLE, Ordering::SeqCst, Ordering::SeqCst);
        if polled.is_ok() {
            mark.lane.ready.fetch_sub(1, Ordering::SeqCst);
        }
        let waker = this
            .waker
            .get_or_insert_with(|| Waker::from(this.mark.clone()));
        let polled = this.inner.poll(&mut Context::from_waker(waker));
        // A payment that woke itself while polled (a yield) is counted again and keeps the
        // others waiting.
        mark.lane.release();
        polled
    }
}

pin_project_lite::pin_project! {
    /// See [`behind`].
    pub struct Behind<F> {
        #[pin]
        inner: F,
        lane: Arc<Lane>,
        // Its latest request was a pass-through one. A connection carrying payments never
        // gives way to them: under payments alone every connection would give way at every
        // payment's step, and be polled again for nothing.
        pass_through: bool,
        // Since when it has been giving way, and the lane's release count then (its waker
        // is in the lane's list until the next release).
        giving_way: Option<(Instant, u64)>,
    }
}

impl<F: Future> Future for Behind<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let lane = &**this.lane;
        if *this.pass_through && lane.ready.load(Ordering::SeqCst) != 0 {
            let now = Instant::now();
            let releases = lane.releases.load(Ordering::SeqCst);
            let (since, listed) = match *this.giving_way {
                Some((since, at)) => (since, at == releases),
                None => (now, false),
            };
            if now.duration_since(since) < MOST_GIVEN_WAY {
                if !listed {
                    let mut waiting = lane.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    waiting.wakers.push(cx.waker().clone());
                    // The oldest wait in the list sets when the list goes.
                    waiting.since = Some(waiting.since.map_or(since, |s| s.min(since)));
                    lane.held_back.store(true, Ordering::SeqCst);
                }
                *this.giving_way = Some((since, releases));
                // Checked again after the waker is in: a payment polled on another thread in
                // between (a multi-threaded runtime) may have emptied the list already.
                if lane.ready.load(Ordering::SeqCst) != 0 {
                    return Poll::Pending;
                }
            }
        }
        *this.giving_way = None;
        SEEN.set(None);
        let polled = this.inner.poll(cx);
        if let Some(pass_through) = SEEN.take() {
            *this.pass_through = pass_through;
        }
        polled
    }
}

/// hyper's executor for a storefront connection's HTTP/2 streams: each stream's task gives
/// way to the thread's ready payments, like the connection's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct BehindPayments;

impl<F> hyper::rt::Executor<F> for BehindPayments
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(behind(fut));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    fn note(log: &Log, line: String) {
        log.lock().unwrap().push(line);
    }

    /// Ready again at once: the task goes to the back of its runtime's queue, like a
    /// connection that always has another request.
    struct Again(bool);

    impl Future for Again {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Four connections always ready, one payment waiting for an answer; connection 0
    /// answers it at its second turn. Returns what ran, in order.
    /// `pass_through`: the connections' requests are pass-through ones, else payments.
    fn four_busy_connections_and_a_payment(payment_ahead: bool, pass_through: bool) -> Vec<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = Log::default();
        runtime.block_on(async {
            let (answer, answered) = tokio::sync::oneshot::channel::<()>();
            let payment = {
                let log = log.clone();
                let steps = async move {
                    note(&log, "payment asks".into());
                    answered.await.unwrap();
                    note(&log, "payment answered".into());
                };
                if payment_ahead {
                    tokio::spawn(ahead(steps))
                } else {
                    tokio::spawn(behind(steps))
                }
            };
            let mut answer = Some(answer);
            let mut connections = Vec::new();
            for c in 0..4 {
                let log = log.clone();
                let answer = if c == 0 { answer.take() } else { None };
                connections.push(tokio::spawn(behind(async move {
                    let mut answer = answer;
                    for turn in 0..3 {
                        if pass_through {
                            super::pass_through();
                        } else {
                            super::payment();
                        }
                        note(&log, format!("connection {c} turn {turn}"));
                        if turn == 1 {
                            if let Some(answer) = answer.take() {
                                answer.send(()).unwrap();
                            }
                        }
                        Again(false).await;
                    }
                })));
            }
            payment.await.unwrap();
            for c in connections {
                c.await.unwrap();
            }
        });
        let log = log.lock().unwrap().clone();
        log
    }

    #[test]
    fn an_answered_payment_runs_before_the_connections_next_turns() {
        let log = four_busy_connections_and_a_payment(true, true);
        let answered = log.iter().position(|l| l == "connection 0 turn 1").unwrap() + 1;
        assert_eq!(log[answered], "payment answered", "{log:?}");
        // Every connection still took all its turns.
        assert_eq!(log.len(), 2 + 4 * 3, "{log:?}");
        // Nothing left counted: a connection made now is not held back.
        assert_eq!(Lane::here().ready.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn without_it_the_payment_waits_behind_every_connection_with_work() {
        // What the lane changes: a plain task answered at connection 0's second turn runs
        // after the other three connections' second turns.
        let log = four_busy_connections_and_a_payment(false, true);
        let answered = log.iter().position(|l| l == "payment answered").unwrap();
        let sent = log.iter().position(|l| l == "connection 0 turn 1").unwrap();
        assert_eq!(answered - sent, 4, "{log:?}");
    }

    #[test]
    fn connections_carrying_payments_do_not_give_way_to_them() {
        // Under payments alone, the connections (which read and answer payments) go on in
        // turn: no connection is held back and polled again for nothing.
        let log = four_busy_connections_and_a_payment(true, false);
        let answered = log.iter().position(|l| l == "payment answered").unwrap();
        let sent = log.iter().position(|l| l == "connection 0 turn 1").unwrap();
        assert_eq!(answered - sent, 4, "{log:?}");
    }

    #[test]
    fn a_wake_after_the_payment_ended_holds_nothing_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            // The payment leaves its waker behind (as with a timer or a channel it no longer
            // waits on), which is woken after the payment ended.
            let kept = Arc::new(Mutex::new(None::<Waker>));
            let leaves = kept.clone();
            let payment = ahead(std::future::poll_fn(move |cx| {
                *leaves.lock().unwrap() = Some(cx.waker().clone());
                Poll::Ready(())
            }));
            tokio::spawn(payment).await.unwrap();
            kept.lock().unwrap().take().unwrap().wake();
            assert_eq!(Lane::here().ready.load(Ordering::SeqCst), 0);
            // A pass-through connection after its first turn goes on.
            let connection = tokio::spawn(behind(async {
                pass_through();
                Again(false).await;
                Again(false).await;
                7
            }));
            let out = tokio::time::timeout(Duration::from_secs(10), connection).await;
            assert_eq!(out.unwrap().unwrap(), 7);
        });
    }

    /// A pass-through connection that has taken its first turn and now gives way, beside
    /// `payment`; returns once the connection has finished (or 10 s passed: `None`).
    fn a_connection_beside(payment: impl Future<Output = ()> + Send + 'static) -> Option<u32> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (request, requested) = tokio::sync::oneshot::channel::<()>();
            let connection = tokio::spawn(behind(async {
                pass_through();
                // Its next request, sent once the payment is there.
                requested.await.unwrap();
                Again(false).await;
                7
            }));
            // The connection's first turn, then the payment, then the connection's request.
            tokio::task::yield_now().await;
            let payment = tokio::spawn(ahead(payment));
            request.send(()).unwrap();
            let out = tokio::time::timeout(Duration::from_secs(10), connection).await;
            payment.abort();
            out.ok().map(Result::unwrap)
        })
    }

    #[test]
    fn a_panicking_payment_releases_the_connections() {
        // The panic ends the payment's task after it was counted out of the lane, before it
        // could release the connection that gave way to it: its drop does.
        let out = a_connection_beside(async {
            Again(false).await;
            panic!("a payment's bug");
        });
        assert_eq!(out, Some(7));
        assert_eq!(Lane::here().ready.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn payments_that_keep_coming_hold_a_connection_back_for_a_bounded_time() {
        // Always ready again (never idle): without the bound the connection would never be
        // polled again. With it, it takes its turn once it has given way for MOST_GIVEN_WAY.
        let started = Instant::now();
        let out = a_connection_beside(async {
            loop {
                Again(false).await;
            }
        });
        assert_eq!(out, Some(7));
        assert!(started.elapsed() >= MOST_GIVEN_WAY, "it gave way first");
    }

    #[test]
    fn a_payment_dropped_while_ready_releases_the_connections() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Counted at once, then dropped before it was ever polled.
            let payment = ahead(std::future::pending::<()>());
            assert_eq!(Lane::here().ready.load(Ordering::SeqCst), 1);
            let connection = tokio::spawn(behind(async {
                pass_through();
                Again(false).await;
                7
            }));
            tokio::task::yield_now().await;
            assert!(
                !connection.is_finished(),
                "it gave way to the ready payment"
            );
            drop(payment);
            let out = tokio::time::timeout(Duration::from_secs(10), connection).await;
            assert_eq!(out.unwrap().unwrap(), 7);
        });
    }
}
