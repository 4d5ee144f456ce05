//! An embedding platform: it runs its plugins (WebAssembly components)
//! with its own wasmtime engine, linker and store data, and gives them
//! Coffer's `wasi:blobstore`, acting for the organisation the platform
//! decides, next to wasmtime-wasi.
//!
//! ```text
//! cargo run --example blobstore_host -- PLUGIN.wasm ORG [ARGS…]
//! ```
//!
//! Coffer is configured from the environment as usual: with no S3
//! variables, the embedded SQLite database (`coffer.db` here); with
//! `AWS_ENDPOINT_URL`, `S3_BUCKET` (…), S3. The plugin's exit status is
//! this program's.

use std::process::ExitCode;

use coffer::blobstore::{self, Blobstore, BlobstoreCtx};
use coffer::{Coffer, Config};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The platform's own per-plugin state (whatever else it keeps would go
/// here too): the two contexts, over one resource table.
#[allow(missing_debug_implementations)] // WasiCtx has no Debug.
pub struct PluginState {
    pub wasi: WasiCtx,
    pub blobs: BlobstoreCtx,
    pub table: ResourceTable,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The platform's linker: WASI, then Coffer's blobstore.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    blobstore::add_to_linker(&mut linker, |s: &mut PluginState| Blobstore { ctx: &s.blobs, table: &mut s.table })?;
    Ok(linker)
}

/// Run the command component `wasm` for `org`, with `wasi` as its WASI
/// context (arguments, output); its exit status.
pub async fn run_plugin_for(coffer: &Coffer, org: &str, wasm: &[u8], wasi: WasiCtx) -> wasmtime::Result<i32> {
    let engine = wasmtime::Engine::default();
    let component = Component::from_binary(&engine, wasm)?;
    let linker = linker(&engine)?;
    let state = PluginState {
        wasi,
        // The platform names the organisation; the plugin cannot.
        blobs: BlobstoreCtx::new(coffer.clone(), org)?,
        table: ResourceTable::new(),
    };
    let mut store = wasmtime::Store::new(&engine, state);
    let command = Command::instantiate_async(&mut store, &component, &linker).await?;
    blobstore::command_status(command.wasi_cli_run().call_run(&mut store).await)
}

#[allow(dead_code)] // The integration tests include this file for `run_plugin_for`.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, org, plugin_args @ ..] = &args[..] else {
        eprintln!("usage: blobstore_host PLUGIN.wasm ORG [ARGS…]");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let coffer = Coffer::open(Config::from_env()?).await?;
        let wasm = std::fs::read(path)?;
        let mut wasi = WasiCtx::builder();
        wasi.arg(path).args(plugin_args).inherit_stdout().inherit_stderr();
        let status = run_plugin_for(&coffer, org, &wasm, wasi.build()).await;
        // Clean-up the plugin's closed values left (releasing their pins)
        // finishes before the process exits.
        coffer.quiesce(std::time::Duration::from_secs(30)).await;
        status
    });
    match outcome {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
