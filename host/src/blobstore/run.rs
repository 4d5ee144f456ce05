//! Running a `wasi:cli` command component with Coffer's blobstore wired
//! in (`coffer run-plugin`): for trying plugins out, and as the smallest
//! complete embedding. The plugin gets arguments, standard output and
//! error, and `wasi:blobstore` for one organisation; no files, no network,
//! no environment.

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use super::ctx::{Blobstore, BlobstoreCtx};
use super::host::add_to_linker;
use crate::error::{Error, Result};

/// Largest output a captured run keeps, per stream.
const CAPTURE_MAX: usize = 1 << 20;

/// How a plugin run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRun {
    /// The plugin's exit status (0: success).
    pub status: i32,
    /// Its standard output and error, when captured.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The store data of a plugin run: wasmtime-wasi's context and Coffer's
/// blobstore context, over one resource table.
struct PluginState {
    wasi: WasiCtx,
    blobs: BlobstoreCtx,
    table: ResourceTable,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The exit status of a `wasi:cli/run` call: 0, 1 for `Err`, the code a
/// `wasi:cli/exit` gave; a trap stays an error.
pub fn command_status(ran: wasmtime::Result<std::result::Result<(), ()>>) -> wasmtime::Result<i32> {
    match ran {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(e),
        },
    }
}

/// Run the command component `wasm` with `args` (its `argv[1..]`) for the
/// organisation `blobs` acts for; with `capture`, its output is returned
/// instead of going to this process's.
pub async fn run_plugin(blobs: BlobstoreCtx, wasm: &[u8], args: &[String], capture: bool) -> Result<PluginRun> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // One plugin at a time: compiling on one thread keeps the peak memory
    // of a run from growing with the machine's cores.
    config.parallel_compilation(false);
    let engine = wasmtime::Engine::new(&config).map_err(|e| Error::Internal(format!("wasmtime: {e}")))?;
    let component = Component::from_binary(&engine, wasm)
        .map_err(|e| Error::InvalidInput(format!("not a usable WebAssembly component: {e:#}")))?;
    let mut linker = Linker::<PluginState>::new(&engine);
    let linked = wasmtime_wasi::p2::add_to_linker_async(&mut linker).and_then(|()| {
        add_to_linker(&mut linker, |s: &mut PluginState| Blobstore { ctx: &s.blobs, table: &mut s.table })
    });
    linked.map_err(|e| Error::Internal(format!("linking the plugin's imports: {e:#}")))?;

    let mut wasi = WasiCtx::builder();
    wasi.arg("plugin").args(args);
    let (out, err) = (MemoryOutputPipe::new(CAPTURE_MAX), MemoryOutputPipe::new(CAPTURE_MAX));
    if capture {
        wasi.stdout(out.clone()).stderr(err.clone());
    } else {
        wasi.inherit_stdout().inherit_stderr();
    }
    let state = PluginState { wasi: wasi.build(), blobs, table: ResourceTable::new() };
    let mut store = wasmtime::Store::new(&engine, state);
    let command = Command::instantiate_async(&mut store, &component, &linker).await.map_err(|e| {
        Error::InvalidInput(format!("the plugin cannot run here (it must be a wasi:cli command): {e:#}"))
    })?;
    let ran = command.wasi_cli_run().call_run(&mut store).await;
    // What the plugin left open is closed with its store, on every path;
    // the pins it held are released in the background (a process that
    // exits next waits for that with `Coffer::quiesce`, as the CLI does).
    drop(store);
    let status = command_status(ran).map_err(|e| Error::Plugin(format!("it trapped: {e:#}")))?;
    Ok(PluginRun { status, stdout: out.contents().to_vec(), stderr: err.contents().to_vec() })
}
