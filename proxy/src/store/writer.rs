//! A store's own writer thread: store calls from async code run there in batches, and each
//! is answered only once the batch is settled (durable).
//!
//! The request path hands a call to the writer and awaits its answer: no blocking-pool
//! thread per call, and no thread per call waiting for a flush. The writer takes every call
//! queued when it wakes (up to [`BATCH`]; with more than one, it also yields the CPU so the
//! threads making calls can queue more, see [`YIELDS`]), runs them one after the other, then
//! settles once and only then answers them. What settling means is the store's: redb runs
//! the whole batch in one write transaction and commits it with an fsync
//! (`redb_store/batch.rs`; a store knows its writer's thread by [`Writer::is_current`]). A
//! call's answer, a write or a read that saw one, is therefore never given before the disk
//! has it, exactly as when each call waits for its own flush. When the settle fails, every
//! call of the batch gets the error: none of them is acknowledged. The one exception is asked
//! for by the caller, per result ([`Writer::run_answering_early`]): a new payment's new
//! idempotency claim is answered once its batch has run, before the flush, so its request
//! goes on with its plugins while the disk works. Nothing is sent on it before the attempt
//! journaled on the claim is durable, which it cannot be if the claim's batch was lost; a
//! batch already bound to fail answers nothing early.
//!
//! A thread that makes many calls and runs its own event loop (a serving thread) can have
//! its answers delivered together ([`deliver_answers_here`]): the writer hands each batch's
//! answers for that thread over in one letter, which wakes the thread's runtime once, where
//! answering each call on its own would wake it once per call (a write to its eventfd each).

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc};
use std::thread::{JoinHandle, ThreadId};

use super::StoreError;

/// The most calls one flush acknowledges; the rest wait for the next.
const BATCH: usize = 1024;

/// How often a batch of more than one call yields the CPU to take in more calls before it
/// settles (it stops at the first yield that brought none).
const YIELDS: u32 = 2;

/// Run on the writer; returns what answers the caller once the batch is settled (`Some`:
/// the flush failed, and why), and whether that answer may be given before
/// ([`Writer::run_answering_early`]).
type Job = Box<dyn FnOnce() -> (Reply, Early) + Send>;
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Whether a call's answer is given as soon as it has run, before its batch is durable.
#[derive(Clone, Copy, PartialEq)]
enum Early {
    Yes,
    No,
}

/// A call as queued: its job, and where its answer goes when its thread has a mailbox.
struct Call {
    job: Job,
    mailbox: Option<Mailbox>,
}

/// One batch's answers for the calls of one thread, and how the batch's settle went.
struct Letter {
    failed: Option<Arc<str>>,
    replies: Vec<Reply>,
}

impl Letter {
    fn deliver(self) {
        for reply in self.replies {
            reply(self.failed.as_deref());
        }
    }
}

type Mailbox = tokio::sync::mpsc::UnboundedSender<Letter>;

thread_local! {
    /// Where the writer delivers the answers to this thread's calls ([`deliver_answers_here`]).
    static MAILBOX: RefCell<Option<Mailbox>> = const { RefCell::new(None) };
}

/// Have the answers to the store calls this thread makes delivered together, one letter per
/// writer batch, by the returned task. Spawn it on this thread's runtime: elsewhere it still
/// answers correctly, but wakes this thread once per call again. The calls' results and the
/// moment they are given (once their batch is durable) are the same; only the number of
/// wakes changes. When the task is dropped (its runtime is ending), it answers the letters
/// still in its mailbox, and the writer answers this thread's later calls one by one.
pub fn deliver_answers_here() -> impl Future<Output = ()> + 'static {
    let (mailbox, letters) = tokio::sync::mpsc::unbounded_channel::<Letter>();
    MAILBOX.with(|slot| *slot.borrow_mut() = Some(mailbox));
    let mut letters = Letters(letters);
    async move {
        while let Some(letter) = letters.0.recv().await {
            letter.deliver();
        }
    }
}

/// The receiving end of a thread's mailbox. Dropped with its task, it closes the mailbox (the
/// writer then answers directly) and answers what is still in it: no letter is lost.
struct Letters(tokio::sync::mpsc::UnboundedReceiver<Letter>);

impl Drop for Letters {
    fn drop(&mut self) {
        self.0.close();
        while let Ok(letter) = self.0.try_recv() {
            letter.deliver();
        }
    }
}

/// Makes every commit so far durable (the store's flush).
pub(crate) type Settle = Box<dyn Fn() -> Result<(), StoreError> + Send>;

/// Whether the batch's settle is bound to fail already (a write of it failed halfway): its
/// early answers then wait for the settle and get its failure, like the rest.
pub(crate) type Doomed = Box<dyn Fn() -> bool + Send>;

/// The store's housekeeping once a batch is answered (redb: a checkpoint of its journal,
/// when one is due), so that the batch's callers do not wait for it; `true` when it did
/// some, which the writer times (`payproxy_store_writer_checkpoint_seconds`).
pub(crate) type Tidy = Box<dyn Fn() -> bool + Send>;

/// What a writer has done: calls run and batches settled (one flush each), as Prometheus
/// metrics the server registers: `payproxy_store_writer_calls_total`,
/// `payproxy_store_writer_batches_total`, and per batch its calls
/// (`payproxy_store_writer_batch_calls`) and how long its settle took
/// (`payproxy_store_writer_settle_seconds`: redb's commit with its fsync). The counters give
/// the mean calls a flush acknowledges; the histograms show how batches are spread, which a
/// mean hides (under load, full batches alternate with batches of one or two calls), and
/// how long the disk keeps every call of a batch waiting.
#[derive(Clone)]
pub struct WriterCounts {
    pub calls: prometheus::IntCounter,
    pub batches: prometheus::IntCounter,
    pub batch_calls: prometheus::Histogram,
    pub settle_seconds: prometheus::Histogram,
    pub checkpoint_seconds: prometheus::Histogram,
}

impl WriterCounts {
    fn new() -> Result<WriterCounts, prometheus::Error> {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(name, help).buckets(buckets),
            )
        };
        Ok(WriterCounts {
            calls: prometheus::IntCounter::new(
                "payproxy_store_writer_calls_total",
                "Store calls run by the state store's writer thread.",
            )?,
            batches: prometheus::IntCounter::new(
                "payproxy_store_writer_batches_total",
                "Batches of calls the state store's writer settled, each with one flush to \
                 disk (failed ones included).",
            )?,
            // 1, 2, 4 … 1024 (`BATCH`).
            batch_calls: histogram(
                "payproxy_store_writer_batch_calls",
                "Calls in each batch the state store's writer settled with one flush.",
                prometheus::exponential_buckets(1.0, 2.0, 11)?,
            )?,
            settle_seconds: histogram(
                "payproxy_store_writer_settle_seconds",
                "Time each batch of the state store's writer took to settle (commit and flush \
                 to disk), while its calls wait.",
                crate::metrics::BUCKETS.to_vec(),
            )?,
            checkpoint_seconds: histogram(
                "payproxy_store_writer_checkpoint_seconds",
                "Time the state store's writer spent on a checkpoint after answering a batch \
                 (redb: every batch journaled since the last one committed durably), while \
                 the calls queued meanwhile wait.",
                crate::metrics::BUCKETS.to_vec(),
            )?,
        })
    }

    /// Every one of these metrics, for the server to register.
    pub fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 5] {
        [
            Box::new(self.calls.clone()),
            Box::new(self.batches.clone()),
            Box::new(self.batch_calls.clone()),
            Box::new(self.settle_seconds.clone()),
            Box::new(self.checkpoint_seconds.clone()),
        ]
    }
}

/// A store's writer thread. Dropping it lets the thread finish the calls already queued and
/// waits for it (unless dropped on the writer itself).
pub struct Writer {
    jobs: Option<mpsc::Sender<Call>>,
    thread: Option<JoinHandle<()>>,
    id: ThreadId,
    counts: WriterCounts,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Start the writer thread; `settle` makes everything committed so far durable, `tidy`
    /// runs after each batch is answered.
    pub(crate) fn start(
        name: &str,
        settle: Settle,
        doomed: Doomed,
        tidy: Tidy,
    ) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Call>();
        let counts = WriterCounts::new().map_err(std::io::Error::other)?;
        let counted = counts.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                give_way();
                run(&queue, &settle, &doomed, &tidy, &counted)
            })?;
        Ok(Writer {
            jobs: Some(jobs),
            id: thread.thread().id(),
            thread: Some(thread),
            counts,
        })
    }

    /// The writer's counters, to register with the server's metrics.
    pub fn counts(&self) -> &WriterCounts {
        &self.counts
    }

    /// Whether this is the thread running this writer's calls.
    pub(crate) fn is_current(&self) -> bool {
        std::thread::current().id() == self.id
    }

    /// Run `call` on the writer; the answer comes once a flush covers it. On a thread with a
    /// mailbox ([`deliver_answers_here`]) the answer is handed out by the mailbox's task, so
    /// await the returned future where that task runs (on that thread's runtime), never by
    /// blocking that thread.
    pub fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        self.run_answering_early(call, |_| false)
    }

    /// [`Writer::run`], except that a result `early` accepts is answered as soon as the call
    /// has run, before its batch is durable; the rest of the batch's calls still wait. Only
    /// for a result nothing irrevocable rests on until a later call's answer, which comes
    /// after a later (or the same) batch is durable, and which fails if this batch's settle
    /// failed: an idempotency claim, whose request sends nothing before its attempt is
    /// journaled on it.
    pub fn run_answering_early<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
        early: fn(&Result<T, StoreError>) -> bool,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = call();
            let when = if early(&result) {
                Early::Yes
            } else {
                Early::No
            };
            let reply: Reply = Box::new(move |failed: Option<&str>| {
                let result = match failed {
                    None => result,
                    Some(why) => Err(StoreError::Flush(why.to_string())),
                };
                // The caller may have gone (its request was cancelled): nothing to answer.
                let _ = answer.send(result);
            });
            (reply, when)
        });
        let call = Call {
            job,
            // While the thread's locals are being destroyed there is no mailbox to use.
            mailbox: MAILBOX
                .try_with(|slot| slot.borrow().clone())
                .ok()
                .flatten(),
        };
        let queued = match &self.jobs {
            Some(jobs) => jobs.send(call).is_ok(),
            None => false,
        };
        async move {
            if !queued {
                return Err(StoreError::Task("the store's writer has stopped".into()));
            }
            // Dropped unanswered only when the call panicked on the writer.
            answered
                .await
                .unwrap_or_else(|_| Err(StoreError::Task("the store call panicked".into())))
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what was queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            // The last handle on the store can be dropped by a call on the writer itself.
            if !self.is_current() {
                let _ = thread.join();
            }
        }
    }
}

/// The answers of a batch's calls: those to give once it is durable, and those to give as
/// soon as the calls have run ([`Writer::run_answering_early`]).
#[derive(Default)]
struct Answers {
    settled: Vec<(Option<Mailbox>, Reply)>,
    early: Vec<(Option<Mailbox>, Reply)>,
}

impl Answers {
    fn len(&self) -> usize {
        self.settled.len() + self.early.len()
    }

    /// Run `next` and keep its answer (none when it panicked: dropping its reply tells its
    /// caller).
    fn run(&mut self, next: Call, counts: &WriterCounts) {
        counts.calls.inc();
        let mailbox = next.mailbox;
        if let Ok((reply, when)) = std::panic::catch_unwind(AssertUnwindSafe(next.job)) {
            match when {
                Early::Yes => self.early.push((mailbox, reply)),
                Early::No => self.settled.push((mailbox, reply)),
            }
        }
    }
}

/// How far the writer's nice value is above the thread that starts it: it gives way to the
/// threads serving requests when they share a core (5 steps gets about a third of their
/// share while both want the CPU). The calls it answers come from those threads, so while it
/// waits they parse, check and route the next requests and queue their calls: the writer
/// wakes to larger batches, each settled with one commit and one fsync, where at the same
/// priority the scheduler ran it every few calls and the commit's fixed cost was paid that
/// often. The serving threads do not starve it: once every request waits on it, they idle
/// and it runs. Other tasks at the default priority on its core get ahead of it too, and
/// under the CFQ or BFQ disk schedulers its I/O priority follows its nice value (one level
/// lower; `none` and `mq-deadline` ignore it).
pub const WRITER_NICENESS: i32 = 5;

/// Raise the calling thread's nice value by [`WRITER_NICENESS`] (at most 19). On Linux the
/// nice value is a thread's own; elsewhere nothing is done. Failing is harmless: the writer
/// runs as it did.
fn give_way() {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority and setpriority take integers and touch no memory of ours; with
    // `PRIO_PROCESS` and `who` 0 they read and set the calling thread's nice value on Linux.
    #[allow(unsafe_code)]
    unsafe {
        use nix::libc::{getpriority, setpriority, PRIO_PROCESS};
        let now = getpriority(PRIO_PROCESS, 0);
        setpriority(PRIO_PROCESS, 0, (now + WRITER_NICENESS).min(19));
    }
}

fn run(
    queue: &mpsc::Receiver<Call>,
    settle: &Settle,
    doomed: &Doomed,
    tidy: &Tidy,
    counts: &WriterCounts,
) {
    let mut replies = Answers::default();
    while let Ok(first) = queue.recv() {
        replies.run(first, counts);
        let mut yields = 0;
        loop {
            let before = replies.len();
            while replies.len() < BATCH {
                match queue.try_recv() {
                    Ok(next) => replies.run(next, counts),
                    Err(_) => break,
                }
            }
            // More than one call queued: requests are arriving together. Let the threads
            // that make them run before settling, and take what they queue meanwhile into
            // this batch: on a busy core the writer would otherwise flush for the few calls
            // queued while it last ran. Alone, a call settles at once; a yield that brought
            // nothing ends the wait.
            let brought_nothing = yields > 0 && replies.len() == before;
            if replies.len() < 2 || replies.len() >= BATCH || yields == YIELDS || brought_nothing {
                break;
            }
            yields += 1;
            std::thread::yield_now();
        }
        let calls = replies.len();
        // Their threads go on while the batch is flushed; unless a write of the batch failed
        // halfway, which fails the whole batch at its settle: answered early, a claim lost
        // with its batch could be claimed again by a retry while its request goes on.
        if doomed() {
            let early = std::mem::take(&mut replies.early);
            replies.settled.extend(early);
        } else {
            answer(replies.early.drain(..), &None);
        }
        let settling = std::time::Instant::now();
        let settled: Option<Arc<str>> = match std::panic::catch_unwind(AssertUnwindSafe(settle)) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string().into()),
            Err(_) => Some("the flush panicked".into()),
        };
        counts
            .settle_seconds
            .observe(settling.elapsed().as_secs_f64());
        counts.batch_calls.observe(calls as f64);
        counts.batches.inc();
        answer(replies.settled.drain(..), &settled);
        let tidying = std::time::Instant::now();
        // A panic here fails nothing: every call of the batch is answered.
        if let Ok(true) = std::panic::catch_unwind(AssertUnwindSafe(tidy)) {
            counts
                .checkpoint_seconds
                .observe(tidying.elapsed().as_secs_f64());
        }
    }
}

/// Answer a settled batch: calls from a thread with a mailbox in one letter per thread, the
/// others each on its own (as when the mailbox's task has gone).
fn answer(replies: impl Iterator<Item = (Option<Mailbox>, Reply)>, failed: &Option<Arc<str>>) {
    let mut letters: Vec<(Mailbox, Letter)> = Vec::new();
    for (mailbox, reply) in replies {
        let Some(mailbox) = mailbox else {
            reply(failed.as_deref());
            continue;
        };
        match letters.iter_mut().find(|(to, _)| to.same_channel(&mailbox)) {
            Some((_, letter)) => letter.replies.push(reply),
            None => letters.push((
                mailbox,
                Letter {
                    failed: failed.clone(),
                    replies: vec![reply],
                },
            )),
        }
    }
    for (mailbox, letter) in letters {
        if let Err(undelivered) = mailbox.send(letter) {
            undelivered.0.deliver();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};

    /// A writer whose flush counts itself and fails while `failing` is set.
    fn writer(flushes: Arc<AtomicU64>, failing: Arc<AtomicU64>) -> Writer {
        let settle: Settle = Box::new(move || {
            flushes.fetch_add(1, Ordering::SeqCst);
            match failing.load(Ordering::SeqCst) {
                0 => Ok(()),
                _ => Err(StoreError::Task("disk on fire".into())),
            }
        });
        settling_with(settle)
    }

    /// A writer settling with `settle`, no batch doomed, no tidy.
    fn settling_with(settle: Settle) -> Writer {
        Writer::start(
            "test-writer",
            settle,
            Box::new(|| false),
            Box::new(|| false),
        )
        .unwrap()
    }

    /// A call that holds the writer until the test waits on the returned gate too; it
    /// answers 0.
    fn held_call(
        writer: &Writer,
    ) -> (
        Arc<Barrier>,
        impl Future<Output = Result<u64, StoreError>> + use<>,
    ) {
        let gate = Arc::new(Barrier::new(2));
        let held = {
            let gate = gate.clone();
            writer.run(move || {
                gate.wait();
                Ok(0u64)
            })
        };
        (gate, held)
    }

    #[tokio::test]
    async fn calls_run_on_the_writer_without_waiting_and_queued_ones_share_a_flush() {
        let flushes = Arc::new(AtomicU64::new(0));
        let writer = writer(flushes.clone(), Arc::new(AtomicU64::new(0)));
        let on = writer
            .run(|| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(
            on, writer.id,
            "a call runs on the writer thread, which defers its flush"
        );
        assert!(!writer.is_current());
        assert_eq!(flushes.load(Ordering::SeqCst), 1);

        // Hold the writer in a call until 50 more are queued: they are one batch.
        let (gate, held) = held_call(&writer);
        let queued: Vec<_> = (1..=50u64).map(|n| writer.run(move || Ok(n))).collect();
        gate.wait();
        assert_eq!(held.await.unwrap(), 0);
        let mut sum = 0;
        for call in queued {
            sum += call.await.unwrap();
        }
        assert_eq!(sum, (1..=50).sum::<u64>());
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(
            flushes <= 3,
            "51 calls queued together took {flushes} flushes"
        );
    }

    #[tokio::test]
    async fn each_batch_shows_its_calls_and_settle_time_in_the_histograms() {
        let flushes = Arc::new(AtomicU64::new(0));
        let settle: Settle = {
            let flushes = flushes.clone();
            Box::new(move || {
                flushes.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(())
            })
        };
        let writer = settling_with(settle);
        writer.run(|| Ok(())).await.unwrap();
        let (gate, held) = held_call(&writer);
        let queued: Vec<_> = (0..50).map(|_| writer.run(|| Ok(()))).collect();
        gate.wait();
        held.await.unwrap();
        for call in queued {
            call.await.unwrap();
        }

        let counts = writer.counts();
        let batches = flushes.load(Ordering::SeqCst);
        assert_eq!(counts.batches.get(), batches);
        let sizes = counts.batch_calls.get_sample_count();
        assert_eq!(sizes, batches, "one observation per batch");
        assert_eq!(
            counts.batch_calls.get_sample_sum(),
            52.0,
            "every call counted once"
        );
        // The 50 queued behind the held call settle together: some batch took more than 32.
        let proto = prometheus::core::Collector::collect(&counts.batch_calls);
        let buckets = proto[0].get_metric()[0].get_histogram().get_bucket();
        let up_to_32 = buckets.iter().find(|b| b.upper_bound() == 32.0).unwrap();
        assert!(up_to_32.cumulative_count() < batches, "{buckets:?}");
        assert_eq!(counts.settle_seconds.get_sample_count(), batches);
        let settled = counts.settle_seconds.get_sample_sum();
        assert!(
            settled >= 0.02 * batches as f64,
            "{settled} s for {batches} settles"
        );
    }

    #[tokio::test]
    async fn the_tidy_runs_after_the_batch_is_answered_and_its_time_is_observed() {
        // The tidy after the first batch waits until the test lets it go, which the test
        // does only once it has that batch's answer: an answer held for the tidy would hang.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        let tidied = Arc::new(AtomicU64::new(0));
        let tidy: Tidy = {
            let tidied = tidied.clone();
            Box::new(move || {
                let first = tidied.fetch_add(1, Ordering::SeqCst) == 0;
                if first {
                    released.lock().unwrap().recv().unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                first
            })
        };
        let writer =
            Writer::start("test-writer", Box::new(|| Ok(())), Box::new(|| false), tidy).unwrap();
        assert_eq!(writer.run(|| Ok(7)).await.unwrap(), 7);
        release.send(()).unwrap();
        // The next call runs once the tidy is done.
        assert_eq!(writer.run(|| Ok(8)).await.unwrap(), 8);
        let counts = writer.counts().clone();
        // Dropped, the writer has finished: the second batch's tidy too.
        drop(writer);
        assert_eq!(tidied.load(Ordering::SeqCst), 2);
        assert_eq!(
            counts.checkpoint_seconds.get_sample_count(),
            1,
            "only a tidy that did some"
        );
        assert!(counts.checkpoint_seconds.get_sample_sum() >= 0.01);
    }

    /// The calling thread's nice value, as the kernel reports it (`/proc`, not the libc
    /// call the writer uses).
    #[cfg(target_os = "linux")]
    fn nice_of_this_thread() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name (which is in parentheses): nice is the 19th field
        // overall, the 17th after the name.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_writer_gives_way_to_the_threads_that_start_it() {
        let here = nice_of_this_thread();
        let writer = writer(Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let there = writer.run(|| Ok(nice_of_this_thread())).await.unwrap();
        assert_eq!(
            there,
            (here + WRITER_NICENESS).min(19),
            "writer's nice value"
        );
        assert_eq!(nice_of_this_thread(), here, "the caller's is left alone");
    }

    #[tokio::test]
    async fn a_failed_flush_fails_every_call_of_its_batch_and_a_panic_only_its_own() {
        let failing = Arc::new(AtomicU64::new(1));
        let writer = writer(Arc::new(AtomicU64::new(0)), failing.clone());
        let written = writer.run(|| Ok("written")).await;
        assert!(
            matches!(&written, Err(StoreError::Flush(why)) if why.contains("disk on fire")),
            "{written:?}"
        );
        failing.store(0, Ordering::SeqCst);

        let panicked = writer.run(|| -> Result<(), StoreError> { panic!("a bug in a call") });
        let next = writer.run(|| Ok(7));
        assert!(matches!(panicked.await, Err(StoreError::Task(_))));
        assert_eq!(next.await.unwrap(), 7, "the writer goes on after a panic");
    }

    #[tokio::test]
    async fn an_early_answer_comes_before_its_batch_is_flushed_and_the_rest_wait_for_the_flush() {
        // A flush that waits until the test lets it go, then fails.
        let (entered, flushing) = mpsc::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        let settle: Settle = Box::new(move || {
            let _ = entered.send(());
            let _ = released.lock().unwrap().recv();
            Err(StoreError::Task("disk on fire".into()))
        });
        let writer = settling_with(settle);
        // Bound after the writer, so dropped before it when the test fails: the flush then
        // returns, and dropping the writer (which waits for its thread) does not hang.
        let release = release;
        let (gate, held) = held_call(&writer);
        let early = writer.run_answering_early(|| Ok(1u64), |r| matches!(r, Ok(1)));
        let refused = writer.run_answering_early(|| Ok(2u64), |r| matches!(r, Ok(1)));
        let plain = writer.run(|| Ok(3u64));
        gate.wait();
        flushing.recv().unwrap();
        // The batch's flush is under way and has not returned: only the early one is answered.
        // (A bound, so that an early answer that waits for the flush fails the test instead
        // of hanging it: the flush returns only once the test lets it.)
        let early = tokio::time::timeout(std::time::Duration::from_secs(10), early).await;
        assert_eq!(early.expect("not answered before the flush").unwrap(), 1);
        let (mut refused, mut plain) = (Box::pin(refused), Box::pin(plain));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        use futures_util::FutureExt as _;
        assert!(
            (&mut refused).now_or_never().is_none(),
            "answered before the flush"
        );
        assert!(
            (&mut plain).now_or_never().is_none(),
            "answered before the flush"
        );
        release.send(()).unwrap();
        for later in [refused.await, plain.await, held.await] {
            assert!(
                matches!(&later, Err(StoreError::Flush(why)) if why.contains("disk on fire")),
                "{later:?}"
            );
        }
    }

    #[tokio::test]
    async fn in_a_batch_bound_to_fail_an_early_answer_waits_for_the_settle_and_gets_its_failure() {
        let settle: Settle = Box::new(|| Err(StoreError::Task("disk on fire".into())));
        let writer =
            Writer::start("test-writer", settle, Box::new(|| true), Box::new(|| false)).unwrap();
        let early = writer.run_answering_early(|| Ok(1u64), |_| true).await;
        assert!(
            matches!(&early, Err(StoreError::Flush(why)) if why.contains("disk on fire")),
            "{early:?}"
        );
    }

    /// A runtime on this thread, to await calls without `#[tokio::test]`.
    fn local_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// Answer one call made on a thread of its own, which has no mailbox.
    fn answered_elsewhere(writer: &Writer) -> Result<(), StoreError> {
        std::thread::scope(|s| {
            s.spawn(|| local_runtime().block_on(writer.run(|| Ok(()))))
                .join()
                .unwrap()
        })
    }

    #[test]
    fn a_batchs_answers_to_a_thread_with_a_mailbox_wait_for_its_task_and_none_is_lost_when_it_goes()
    {
        use futures_util::FutureExt as _;
        let failing = Arc::new(AtomicU64::new(1));
        let writer = writer(Arc::new(AtomicU64::new(0)), failing.clone());
        let runtime = local_runtime();
        let delivery = deliver_answers_here();

        // Hold the writer in a call until 20 more are queued from this thread: one batch,
        // whose flush fails.
        let (gate, held) = held_call(&writer);
        let mut queued: Vec<_> = (1..=20u64)
            .map(|n| Box::pin(writer.run(move || Ok(n))))
            .collect();
        gate.wait();
        // A call from another thread is answered only after every earlier batch has been
        // answered; two in a row, since the first may have joined the held batch.
        answered_elsewhere(&writer).unwrap_err();
        failing.store(0, Ordering::SeqCst);
        answered_elsewhere(&writer).unwrap();

        // The held batch is settled and answered, into this thread's mailbox: no call of it
        // has its answer until the mailbox's task runs.
        let mut held = Box::pin(held);
        assert!(held.as_mut().now_or_never().is_none());
        assert!(queued.iter_mut().all(|call| call.now_or_never().is_none()));
        runtime.spawn(delivery);
        let first = runtime.block_on(held);
        assert!(matches!(&first, Err(StoreError::Flush(_))), "{first:?}");
        for call in queued {
            let answer = runtime.block_on(call);
            assert!(
                matches!(&answer, Err(StoreError::Flush(why)) if why.contains("disk on fire")),
                "every call of the batch gets its failed flush: {answer:?}"
            );
        }

        // The mailbox's task goes with its runtime: the writer answers this thread's calls
        // on their own again.
        drop(runtime);
        let runtime = local_runtime();
        assert_eq!(runtime.block_on(writer.run(|| Ok(7))).unwrap(), 7);

        // A task dropped before it ran answers what is in its mailbox: nothing is lost.
        let delivery = deliver_answers_here();
        let mut call = Box::pin(writer.run(|| Ok(8)));
        answered_elsewhere(&writer).unwrap();
        answered_elsewhere(&writer).unwrap();
        assert!(call.as_mut().now_or_never().is_none(), "in the mailbox");
        drop(delivery);
        assert_eq!(call.now_or_never().expect("answered").unwrap(), 8);
    }

    #[test]
    fn dropping_the_writer_answers_what_was_queued_then_stops_the_thread() {
        let flushes = Arc::new(AtomicU64::new(0));
        let writer = writer(flushes.clone(), Arc::new(AtomicU64::new(0)));
        let calls: Vec<_> = (0..10).map(|n| writer.run(move || Ok(n))).collect();
        drop(writer);
        let runtime = local_runtime();
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(runtime.block_on(call).unwrap(), n);
        }
        assert!(flushes.load(Ordering::SeqCst) >= 1);
    }
}
