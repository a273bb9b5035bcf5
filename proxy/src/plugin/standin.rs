//! Deterministic, capability-free stand-ins for the WASI imports that Rust's
//! `wasm32-wasip2` standard library links.
//!
//! Plugins are pure (`docs/contract.md`): they get no filesystem, network, environment, clock or
//! randomness they could depend on. A plugin built with `std` still imports a few WASI
//! interfaces (stdio for panic messages, the environment, `exit`); we link stand-ins that
//! answer the same thing every time: an empty environment, stdout/stderr that discard,
//! an empty stdin, a clock fixed at the Unix epoch, and "random" bytes from a fixed-seed
//! generator reset for every instance (so `HashMap` works, deterministically).
//!
//! The filesystem and sockets (`wasi:filesystem/*`, `wasi:sockets/*`) are linked as traps,
//! per component ([`with_traps`]): the runtimes of other languages (componentize-py's CPython,
//! componentize-js's JavaScript engine, Rust's `std::fs`) import them whatever the plugin does,
//! so such a component loads, and a call into one of them traps (the plugin's step fails as
//! any trap does; nothing is opened, read or connected). Anything else (`wasi:http`, an
//! interface of the plugin's own) is not linked: a component that imports it is refused at
//! load with the import named ([`ungranted_import`]).

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, ComponentType, Linker, LinkerInstance, Lower, Resource, ResourceType,
};
use wasmtime::{Engine, StoreContextMut};

use super::store::CallState;

/// Version we define the interfaces at; the linker matches any semver-compatible 0.2.x import.
const V: &str = "0.2.0";

struct InputStream;
struct OutputStream;
struct Pollable;
struct IoError;
struct TerminalInput;
struct TerminalOutput;

/// `wasi:io/streams.stream-error`.
#[derive(ComponentType, Lower)]
#[component(variant)]
enum StreamError {
    #[component(name = "last-operation-failed")]
    #[allow(dead_code)] // never produced, but part of the type
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

type R<T> = wasmtime::Result<T>;
type Cx<'a> = StoreContextMut<'a, CallState>;

/// Largest single "random" or stream buffer a plugin may ask for.
const MAX_BUFFER: u64 = 1 << 20;

/// The interfaces the stand-ins define, without their version: what [`granted`] lets a
/// component import. Each stand-in is defined through [`interface`], which checks it is
/// listed here.
const DEFINED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The stand-ins' interface `name` (without its version) in `linker`, at [`V`].
fn interface<'a>(
    linker: &'a mut Linker<CallState>,
    name: &str,
) -> R<LinkerInstance<'a, CallState>> {
    debug_assert!(
        DEFINED.contains(&name),
        "stand-in {name} missing from DEFINED"
    );
    linker.instance(&format!("{name}@{V}"))
}

/// Link every stand-in into `linker`.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    io(linker)?;
    cli(linker)?;
    clocks(linker)?;
    random(linker)?;
    Ok(())
}

fn resource<T: 'static>(inst: &mut LinkerInstance<'_, CallState>, name: &str) -> R<()> {
    inst.resource(name, ResourceType::host::<T>(), |_, _| Ok(()))
}

fn io(linker: &mut Linker<CallState>) -> R<()> {
    let mut error = interface(linker, "wasi:io/error")?;
    resource::<IoError>(&mut error, "error")?;
    error.func_wrap(
        "[method]error.to-debug-string",
        |_: Cx, (_,): (Resource<IoError>,)| Ok(("error".to_string(),)),
    )?;

    let mut poll = interface(linker, "wasi:io/poll")?;
    resource::<Pollable>(&mut poll, "pollable")?;
    // Every pollable we hand out (stream readiness) is always ready.
    poll.func_wrap(
        "[method]pollable.ready",
        |_: Cx, (_,): (Resource<Pollable>,)| Ok((true,)),
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_: Cx, (_,): (Resource<Pollable>,)| Ok(()),
    )?;
    poll.func_wrap("poll", |_: Cx, (list,): (Vec<Resource<Pollable>>,)| {
        let n = u32::try_from(list.len()).unwrap_or(u32::MAX);
        Ok(((0..n).collect::<Vec<u32>>(),))
    })?;

    let mut streams = interface(linker, "wasi:io/streams")?;
    resource::<InputStream>(&mut streams, "input-stream")?;
    resource::<OutputStream>(&mut streams, "output-stream")?;
    type In = Resource<InputStream>;
    type Out = Resource<OutputStream>;
    type Res<T> = Result<T, StreamError>;
    // stdin is empty: every read reports the stream closed.
    for name in [
        "[method]input-stream.read",
        "[method]input-stream.blocking-read",
    ] {
        streams.func_wrap(name, |_: Cx, (_, _): (In, u64)| {
            Ok((Res::<Vec<u8>>::Err(StreamError::Closed),))
        })?;
    }
    for name in [
        "[method]input-stream.skip",
        "[method]input-stream.blocking-skip",
    ] {
        streams.func_wrap(name, |_: Cx, (_, _): (In, u64)| {
            Ok((Res::<u64>::Err(StreamError::Closed),))
        })?;
    }
    streams.func_wrap("[method]input-stream.subscribe", |_: Cx, (_,): (In,)| {
        Ok((Resource::<Pollable>::new_own(0),))
    })?;
    // stdout/stderr discard: plugin output could carry payment data, so it never reaches logs.
    streams.func_wrap(
        "[method]output-stream.check-write",
        |_: Cx, (_,): (Out,)| Ok((Res::Ok(MAX_BUFFER),)),
    )?;
    for name in [
        "[method]output-stream.write",
        "[method]output-stream.blocking-write-and-flush",
    ] {
        streams.func_wrap(name, |_: Cx, (_, _): (Out, Vec<u8>)| Ok((Res::Ok(()),)))?;
    }
    for name in [
        "[method]output-stream.flush",
        "[method]output-stream.blocking-flush",
    ] {
        streams.func_wrap(name, |_: Cx, (_,): (Out,)| Ok((Res::Ok(()),)))?;
    }
    for name in [
        "[method]output-stream.write-zeroes",
        "[method]output-stream.blocking-write-zeroes-and-flush",
    ] {
        streams.func_wrap(name, |_: Cx, (_, _): (Out, u64)| Ok((Res::Ok(()),)))?;
    }
    for name in [
        "[method]output-stream.splice",
        "[method]output-stream.blocking-splice",
    ] {
        streams.func_wrap(name, |_: Cx, (_, _, _): (Out, In, u64)| {
            Ok((Res::<u64>::Err(StreamError::Closed),))
        })?;
    }
    streams.func_wrap("[method]output-stream.subscribe", |_: Cx, (_,): (Out,)| {
        Ok((Resource::<Pollable>::new_own(0),))
    })?;
    Ok(())
}

fn cli(linker: &mut Linker<CallState>) -> R<()> {
    let mut env = interface(linker, "wasi:cli/environment")?;
    env.func_wrap("get-environment", |_: Cx, (): ()| {
        Ok((Vec::<(String, String)>::new(),))
    })?;
    env.func_wrap("get-arguments", |_: Cx, (): ()| Ok((Vec::<String>::new(),)))?;
    env.func_wrap("initial-cwd", |_: Cx, (): ()| Ok((None::<String>,)))?;

    let mut exit = interface(linker, "wasi:cli/exit")?;
    exit.func_wrap("exit", |_: Cx, (_,): (Result<(), ()>,)| -> R<()> {
        wasmtime::bail!("plugin called exit")
    })?;

    interface(linker, "wasi:cli/stdin")?.func_wrap("get-stdin", |_: Cx, (): ()| {
        Ok((Resource::<InputStream>::new_own(0),))
    })?;
    interface(linker, "wasi:cli/stdout")?.func_wrap("get-stdout", |_: Cx, (): ()| {
        Ok((Resource::<OutputStream>::new_own(1),))
    })?;
    interface(linker, "wasi:cli/stderr")?.func_wrap("get-stderr", |_: Cx, (): ()| {
        Ok((Resource::<OutputStream>::new_own(2),))
    })?;

    resource::<TerminalInput>(
        &mut interface(linker, "wasi:cli/terminal-input")?,
        "terminal-input",
    )?;
    resource::<TerminalOutput>(
        &mut interface(linker, "wasi:cli/terminal-output")?,
        "terminal-output",
    )?;
    // No terminals: plugins are not attached to one.
    interface(linker, "wasi:cli/terminal-stdin")?
        .func_wrap("get-terminal-stdin", |_: Cx, (): ()| {
            Ok((None::<Resource<TerminalInput>>,))
        })?;
    for (iface, func) in [
        ("terminal-stdout", "get-terminal-stdout"),
        ("terminal-stderr", "get-terminal-stderr"),
    ] {
        interface(linker, &format!("wasi:cli/{iface}"))?.func_wrap(func, |_: Cx, (): ()| {
            Ok((None::<Resource<TerminalOutput>>,))
        })?;
    }
    Ok(())
}

fn clocks(linker: &mut Linker<CallState>) -> R<()> {
    // Time is an input the host passes explicitly; the ambient clock is frozen at the epoch.
    let mut wall = interface(linker, "wasi:clocks/wall-clock")?;
    let epoch = Datetime {
        seconds: 0,
        nanoseconds: 0,
    };
    wall.func_wrap("now", move |_: Cx, (): ()| Ok((epoch,)))?;
    wall.func_wrap("resolution", |_: Cx, (): ()| {
        Ok((Datetime {
            seconds: 0,
            nanoseconds: 1,
        },))
    })?;

    let mut mono = interface(linker, "wasi:clocks/monotonic-clock")?;
    mono.func_wrap("now", |_: Cx, (): ()| Ok((0u64,)))?;
    mono.func_wrap("resolution", |_: Cx, (): ()| Ok((1u64,)))?;
    // Sleeping would block the host thread outside the epoch deadline: refuse it.
    for name in ["subscribe-instant", "subscribe-duration"] {
        mono.func_wrap(name, |_: Cx, (_,): (u64,)| -> R<(Resource<Pollable>,)> {
            wasmtime::bail!("plugins may not sleep")
        })?;
    }
    Ok(())
}

fn random(linker: &mut Linker<CallState>) -> R<()> {
    fn bytes(mut cx: Cx, len: u64) -> R<(Vec<u8>,)> {
        if len > MAX_BUFFER {
            wasmtime::bail!("plugin asked for {len} random bytes");
        }
        let rng = &mut cx.data_mut().rng;
        Ok(((0..len).map(|_| (next(rng) >> 56) as u8).collect(),))
    }
    fn next(state: &mut u64) -> u64 {
        // xorshift64*: fixed seed per instance, the same sequence every time.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    let mut r = interface(linker, "wasi:random/random")?;
    r.func_wrap("get-random-bytes", |cx: Cx, (len,): (u64,)| bytes(cx, len))?;
    r.func_wrap("get-random-u64", |mut cx: Cx, (): ()| {
        Ok((next(&mut cx.data_mut().rng),))
    })?;
    let mut insecure = interface(linker, "wasi:random/insecure")?;
    insecure.func_wrap("get-insecure-random-bytes", |cx: Cx, (len,): (u64,)| {
        bytes(cx, len)
    })?;
    insecure.func_wrap("get-insecure-random-u64", |mut cx: Cx, (): ()| {
        Ok((next(&mut cx.data_mut().rng),))
    })?;
    interface(linker, "wasi:random/insecure-seed")?
        .func_wrap("insecure-seed", |_: Cx, (): ()| {
            Ok(((0x5eed_u64, 0x5eed_u64),))
        })?;
    Ok(())
}

/// Interfaces whose every function is linked as a trap, for components that import them
/// without needing them: the runtimes of other languages (componentize-py's CPython,
/// componentize-js's StarlingMonkey) import the filesystem and sockets whatever the plugin
/// does. A plugin that calls one traps, and its step fails as any trap does: nothing is
/// ever opened or connected.
const TRAPPED: &[&str] = &["wasi:filesystem/", "wasi:sockets/"];

/// A resource type of a trapped interface: no value of it is ever made.
struct Denied;

/// The import of `component` payproxy neither defines nor traps (the first one), if any:
/// anything but the contract's own interfaces, the stand-ins' (`wasi:io`, `wasi:cli`,
/// `wasi:clocks`, `wasi:random`) and the trapped ones ([`TRAPPED`]).
pub fn ungranted_import(component: &Component, engine: &Engine) -> Option<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name)
        .find(|name| !granted(name))
        .map(str::to_string)
}

/// Whether payproxy links an import of this name (an interface, with its version): the
/// contract's own, the stand-ins' and the trapped ones.
fn granted(import: &str) -> bool {
    let interface = import.split_once('@').map_or(import, |(name, _)| name);
    import.starts_with("payproxy:plugin/") || DEFINED.contains(&interface) || trapped(import)
}

/// Whether `import` is one of the [`TRAPPED`] interfaces.
fn trapped(import: &str) -> bool {
    TRAPPED.iter().any(|prefix| import.starts_with(prefix))
}

/// A copy of `linker` with every function of `component`'s imports from [`TRAPPED`]
/// interfaces linked as a trap that names it, and their resources as types no value is made
/// of. `None`: the component imports none of them.
pub fn with_traps(
    linker: &Linker<CallState>,
    component: &Component,
    engine: &Engine,
) -> wasmtime::Result<Option<Linker<CallState>>> {
    let ty = component.component_type();
    if !ty.imports(engine).any(|(name, _)| trapped(name)) {
        return Ok(None);
    }
    // The trapped interfaces use `wasi:io`'s streams, errors and pollables: those are the
    // stand-ins' resource types, not new ones.
    let mut io = Vec::new();
    for (name, item) in ty.imports(engine) {
        if let (true, ComponentItem::ComponentInstance(instance)) =
            (name.starts_with("wasi:io/"), item.ty)
        {
            for (export, item) in instance.exports(engine) {
                if let ComponentItem::Resource(resource) = item.ty {
                    io.push((resource, io_resource(export)));
                }
            }
        }
    }
    let mut linker = linker.clone();
    for (name, item) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if !trapped(name) {
            continue;
        }
        let mut linked = linker.instance(name)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let called = format!("{name}#{export}");
                    linked.func_new(export, move |_, _, _, _| {
                        wasmtime::bail!(
                            "plugins get no filesystem or network: `{called}` is not available"
                        )
                    })?;
                }
                ComponentItem::Resource(resource) => {
                    let host = io
                        .iter()
                        .find(|(r, _)| *r == resource)
                        .and_then(|(_, host)| *host)
                        .unwrap_or_else(ResourceType::host::<Denied>);
                    linked.resource(export, host, |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(Some(linker))
}

/// The stand-in's resource type of a `wasi:io` resource, by its name.
fn io_resource(name: &str) -> Option<ResourceType> {
    Some(match name {
        "input-stream" => ResourceType::host::<InputStream>(),
        "output-stream" => ResourceType::host::<OutputStream>(),
        "error" => ResourceType::host::<IoError>(),
        "pollable" => ResourceType::host::<Pollable>(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::granted;

    #[test]
    fn only_the_stand_ins_the_contract_and_the_trapped_interfaces_are_granted() {
        for name in [
            "payproxy:plugin/types@0.4.0",
            "wasi:io/streams@0.2.9",
            "wasi:cli/environment@0.2.0",
            "wasi:clocks/wall-clock@0.2.6",
            "wasi:random/random@0.2.0",
            "wasi:filesystem/types@0.2.0",
            "wasi:filesystem/preopens@0.2.9",
            "wasi:sockets/tcp@0.2.0",
            "wasi:sockets/ip-name-lookup@0.2.6",
        ] {
            assert!(granted(name), "{name}");
        }
        for name in [
            "wasi:http/outgoing-handler@0.2.0",
            "wasi:keyvalue/store@0.2.0-draft",
            "acme:net/dial@1.0.0",
            "wasi:iox/streams@0.2.0",
            "payproxy:pluginx/types@0.4.0",
            "wasi:clocks/timezone@0.2.0",
            "wasi:cli/environmentx@0.2.0",
        ] {
            assert!(!granted(name), "{name}");
        }
    }
}
