//! The fuzzer's driver (stable Rust, no cargo-fuzz): mutates the seed corpus of
//! `sd_wgpu::fuzz` and runs the targets for a number of executions, watching for
//!
//! - panics (caught per input),
//! - hangs (a watchdog thread: an input running over `--hang-seconds` is saved and the process
//!   exits), and slow inputs (over 1 s, saved),
//! - memory: a counting global allocator; an input whose live allocations peak over
//!   `--alloc-cap-mib` (default 256 MiB) is saved, and any single request over 4 GiB is
//!   refused (the input is written out first, then the process aborts).
//!
//! ```text
//! cargo run --release --example fuzz -- --execs 10000000 [--threads 2] [--target png] \
//!     [--out target/fuzz] [--seed 1]
//! ```
//! Findings go to `--out` as `<target>-<kind>-<hash>.bin`; copy them to
//! `tests/fixtures/fuzz/` where `tests/fuzz.rs` replays them on every `cargo test`.

use sd_wgpu::fuzz::{Harness, Rng, Target, mutate};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Any single allocation above this is refused (the input is saved first).
const HARD_CAP: usize = 4 << 30;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// The input this thread runs (pointer, length), for the allocator's last words.
    static INPUT: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// File descriptor the allocator writes a refused input to (opened at start).
static OOM_FD: AtomicI32 = AtomicI32::new(-1);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > HARD_CAP {
            last_words();
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        count(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > HARD_CAP {
            last_words();
            return std::ptr::null_mut();
        }
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

fn count(d: isize) {
    let _ = LIVE.try_with(|live| {
        let v = live.get() + d;
        live.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v);
            }
        });
    });
}

/// Writes the running input to the pre-opened file without allocating.
fn last_words() {
    let fd = OOM_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let Ok((ptr, len)) = INPUT.try_with(Cell::get) else {
        return;
    };
    if ptr == 0 {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::fd::FromRawFd;
        // SAFETY: the slice is the input the current thread is running (alive for the call);
        // the fd was opened by main and is never closed while fuzzing.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let _ = f.write_all(bytes);
        let _ = f.sync_all();
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Args {
    execs: u64,
    threads: usize,
    targets: Vec<Target>,
    out: PathBuf,
    seed: u64,
    alloc_cap: isize,
    hang: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        execs: 1_000_000,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        targets: Target::ALL.to_vec(),
        out: PathBuf::from("target/fuzz"),
        seed: 1,
        alloc_cap: 256 << 20,
        hang: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--execs" => a.execs = num(val()?)?,
            "--threads" => a.threads = num(val()?)?.max(1) as usize,
            "--seed" => a.seed = num(val()?)?,
            "--out" => a.out = PathBuf::from(val()?),
            "--alloc-cap-mib" => a.alloc_cap = (num(val()?)? << 20) as isize,
            "--hang-seconds" => a.hang = Duration::from_secs(num(val()?)?),
            "--target" => {
                let names = val()?;
                a.targets = names
                    .split(',')
                    .map(|n| Target::from_name(n).ok_or_else(|| format!("unknown target {n}")))
                    .collect::<Result<_, _>>()?;
            }
            o => return Err(format!("unknown flag {o}")),
        }
    }
    Ok(a)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn save(out: &Path, t: Target, kind: &str, bytes: &[u8]) -> PathBuf {
    let p = out.join(format!("{}-{kind}-{:016x}.bin", t.name(), fnv(bytes)));
    let _ = std::fs::write(&p, bytes);
    p
}

/// The input a thread is running, for the watchdog.
type Running = Mutex<(Target, Vec<u8>)>;

#[derive(Default)]
struct Tally {
    execs: u64,
    accepted: u64,
    panics: u64,
    over_cap: u64,
    slow: u64,
    max_peak: isize,
    slowest: Duration,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz: {e}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&args.out).expect("creating --out");
    let oom = std::fs::File::create(args.out.join("refused-allocation-input.bin"))
        .expect("creating the allocation-refusal file");
    #[cfg(unix)]
    {
        use std::os::fd::IntoRawFd;
        OOM_FD.store(oom.into_raw_fd(), Ordering::Relaxed);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let harness = Arc::new(Harness::new(&root).expect("fuzz harness"));
    // Silent panics: each is counted and its input saved.
    let last_panic: Arc<Mutex<String>> = Arc::default();
    {
        let lp = last_panic.clone();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut s) = lp.lock() {
                *s = info.to_string();
            }
        }));
    }
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let per_thread = args.execs.div_ceil(args.threads as u64);
    // Per thread: when its current input started (ms since start; 0 = idle), and the input.
    let beats: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.threads).map(|_| AtomicU64::new(0)).collect());
    let current: Arc<Vec<Running>> = Arc::new(
        (0..args.threads)
            .map(|_| Mutex::new((Target::Image, Vec::new())))
            .collect(),
    );
    {
        let (beats, current, done, out, hang) = (
            beats.clone(),
            current.clone(),
            done.clone(),
            args.out.clone(),
            args.hang,
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let now = started.elapsed().as_millis() as u64;
                for (i, b) in beats.iter().enumerate() {
                    let s = b.load(Ordering::Relaxed);
                    if s != 0 && now.saturating_sub(s) > hang.as_millis() as u64 {
                        let (t, input) = current[i]
                            .lock()
                            .map(|g| g.clone())
                            .unwrap_or((Target::Image, Vec::new()));
                        let p = save(&out, t, "hang", &input);
                        eprintln!("fuzz: HANG over {hang:?} in {}: {}", t.name(), p.display());
                        std::process::exit(3);
                    }
                }
            }
        });
    }
    let tallies: Vec<Mutex<std::collections::HashMap<&'static str, Tally>>> =
        (0..args.threads).map(|_| Mutex::default()).collect();
    let tallies = Arc::new(tallies);
    let mut handles = Vec::new();
    for th in 0..args.threads {
        let (harness, args_targets, out) =
            (harness.clone(), args.targets.clone(), args.out.clone());
        let (beats, current, tallies, last_panic) = (
            beats.clone(),
            current.clone(),
            tallies.clone(),
            last_panic.clone(),
        );
        let (seed, cap, root) = (args.seed, args.alloc_cap, root.clone());
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng::new(seed.wrapping_add(th as u64 * 7919));
            let mut pools: Vec<Vec<Vec<u8>>> = args_targets
                .iter()
                .map(|&t| harness.seeds(&root, t))
                .collect();
            for k in 0..per_thread {
                let ti = (k as usize) % args_targets.len();
                let t = args_targets[ti];
                let pool = &pools[ti];
                let a = &pool[rng.below(pool.len())];
                let b = &pool[rng.below(pool.len())];
                let max_len = if t.is_text() { 64 << 10 } else { 1 << 20 };
                let input = mutate(&mut rng, t, a, b, max_len);
                if let Ok(mut c) = current[th].lock() {
                    c.0 = t;
                    c.1.clone_from(&input);
                }
                INPUT.with(|c| c.set((input.as_ptr() as usize, input.len())));
                LIVE.with(|l| PEAK.with(|p| p.set(l.get())));
                let base = LIVE.with(Cell::get);
                beats[th].store(
                    started.elapsed().as_millis().max(1) as u64,
                    Ordering::Relaxed,
                );
                let t0 = Instant::now();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    harness.run(t, &input)
                }));
                let dt = t0.elapsed();
                beats[th].store(0, Ordering::Relaxed);
                let peak = PEAK.with(Cell::get) - base;
                let mut tally = tallies[th].lock().unwrap();
                let e = tally.entry(t.name()).or_default();
                e.execs += 1;
                e.max_peak = e.max_peak.max(peak);
                if dt > e.slowest {
                    e.slowest = dt;
                }
                match r {
                    Ok(accepted) => {
                        if accepted {
                            e.accepted += 1;
                            // Accepted inputs become seeds (a bounded pool).
                            let pool = &mut pools[ti];
                            if pool.len() < 512 {
                                pool.push(input.clone());
                            } else {
                                let i = rng.below(pool.len());
                                pool[i] = input.clone();
                            }
                        }
                    }
                    Err(_) => {
                        e.panics += 1;
                        let p = save(&out, t, "panic", &input);
                        let msg = last_panic.lock().map(|s| s.clone()).unwrap_or_default();
                        eprintln!("fuzz: PANIC in {}: {} ({msg})", t.name(), p.display());
                    }
                }
                if peak > cap {
                    e.over_cap += 1;
                    let p = save(&out, t, "alloc", &input);
                    eprintln!(
                        "fuzz: {} MiB live in {}: {}",
                        peak >> 20,
                        t.name(),
                        p.display()
                    );
                }
                if dt > Duration::from_secs(1) {
                    e.slow += 1;
                    let p = save(&out, t, "slow", &input);
                    eprintln!("fuzz: {dt:?} in {}: {}", t.name(), p.display());
                }
                if th == 0 && k % 200_000 == 0 && k > 0 {
                    eprintln!(
                        "fuzz: {} execs per thread, {:.0} s",
                        k,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    done.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let mut total = Tally::default();
    println!("target  execs      accepted   panics  over-cap  slow  peak-live  slowest");
    for t in &args.targets {
        let mut sum = Tally::default();
        for m in tallies.iter() {
            if let Some(e) = m.lock().unwrap().get(t.name()) {
                sum.execs += e.execs;
                sum.accepted += e.accepted;
                sum.panics += e.panics;
                sum.over_cap += e.over_cap;
                sum.slow += e.slow;
                sum.max_peak = sum.max_peak.max(e.max_peak);
                sum.slowest = sum.slowest.max(e.slowest);
            }
        }
        println!(
            "{:<7} {:<10} {:<10} {:<7} {:<9} {:<5} {:<10} {:.1?}",
            t.name(),
            sum.execs,
            sum.accepted,
            sum.panics,
            sum.over_cap,
            sum.slow,
            format!("{:.1} MiB", sum.max_peak as f64 / (1 << 20) as f64),
            sum.slowest
        );
        total.execs += sum.execs;
        total.panics += sum.panics;
        total.over_cap += sum.over_cap;
        total.slow += sum.slow;
    }
    println!(
        "{} executions in {secs:.0} s ({:.0}/s) on {} threads: {} panics, {} over the {} MiB cap, {} slow, no hang",
        total.execs,
        total.execs as f64 / secs,
        args.threads,
        total.panics,
        total.over_cap,
        args.alloc_cap >> 20,
        total.slow
    );
    let _ = std::fs::remove_file(args.out.join("refused-allocation-input.bin"));
    if total.panics + total.over_cap + total.slow > 0 {
        std::process::exit(1);
    }
}
