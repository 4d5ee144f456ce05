//! An example plugin: a `wasi:cli` command (Rust, `wasm32-wasip2`) that
//! keeps files through `wasi:blobstore`. It knows nothing of Coffer: the
//! platform that runs it decides which organisation it stores for.
//!
//! ```text
//! coffer run-plugin coffer_example_blobstore_plugin.wasm --org acme demo
//! ```
//!
//! Commands (the first argument): `demo` (store, list, read and delete a
//! few files), `put C N TEXT`, `cat C N [START END]`, `ls C [PAGE]`,
//! `rm C N…`, `mkdir C`, `rmdir C`, `write C N MIB` / `check C N MIB` (a
//! generated value of MIB MiB, streamed out and read back and compared),
//! `cp C N C2 N2`, `mv C N C2 N2`, `info C N`, `clear C`, `hold C N` (open,
//! delete, then read what was opened), `open-many C N K`, `stream-many C N K`
//! and `write-many C K` (values held open at once); `finish-early C N`
//! breaks the contract (a trap).

use std::process::ExitCode;

wit_bindgen::generate!({
    path: "../../wit/wasi-blobstore",
    world: "wasi:blobstore/imports",
    generate_all,
});

use wasi::blobstore::blobstore as store;
use wasi::blobstore::container::Container;
use wasi::blobstore::types::{IncomingValue, ObjectId, OutgoingValue};

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or_else(|| format!("missing argument {i}"));
    let number = |i: usize| arg(i)?.parse::<u64>().map_err(|e| format!("argument {i}: {e}"));
    match arg(0)? {
        "demo" => demo(),
        "mkdir" => store::create_container(arg(1)?).map(drop),
        "rmdir" => store::delete_container(arg(1)?),
        "put" => put(&open(arg(1)?)?, arg(2)?, arg(3)?.as_bytes()),
        "cat" => {
            let c = open(arg(1)?)?;
            let (start, end) = if args.len() > 3 { (number(3)?, number(4)?) } else { (0, u64::MAX) };
            let bytes = read_sync(&c, arg(2)?, start, end)?;
            println!("{}", String::from_utf8_lossy(&bytes));
            Ok(())
        }
        "ls" => {
            let page = if args.len() > 2 { number(2)? } else { 100 };
            for name in list(&open(arg(1)?)?, page)? {
                println!("{name}");
            }
            Ok(())
        }
        "rm" => open(arg(1)?)?.delete_objects(&args[2..]),
        "info" => {
            let m = open(arg(1)?)?.object_info(arg(2)?)?;
            println!("{}/{} {} bytes, created at {}", m.container, m.name, m.size, m.created_at);
            Ok(())
        }
        "cp" => store::copy_object(&id(arg(1)?, arg(2)?), &id(arg(3)?, arg(4)?)),
        "mv" => store::move_object(&id(arg(1)?, arg(2)?), &id(arg(3)?, arg(4)?)),
        "clear" => open(arg(1)?)?.clear(),
        "write" => {
            let c = open_or_create(arg(1)?)?;
            write_generated(&c, arg(2)?, number(3)? << 20)?;
            println!("wrote {} MiB", number(3)?);
            Ok(())
        }
        "check" => {
            let n = check_generated(&open(arg(1)?)?, arg(2)?, number(3)? << 20)?;
            println!("verified {n} bytes");
            Ok(())
        }
        "hold" => {
            // An open value keeps its bytes: open, delete, then read.
            let c = open(arg(1)?)?;
            let value = c.get_data(arg(2)?, 0, u64::MAX)?;
            c.delete_object(arg(2)?)?;
            println!("deleted; has {}: {}", arg(2)?, c.has_object(arg(2)?)?);
            let bytes = IncomingValue::incoming_value_consume_sync(value)?;
            println!("still read: {}", String::from_utf8_lossy(&bytes));
            Ok(())
        }
        "open-many" => {
            // Values held open at once, until the host says no.
            let c = open(arg(1)?)?;
            let mut held = Vec::new();
            for i in 0..number(3)? {
                match c.get_data(arg(2)?, 0, u64::MAX) {
                    Ok(v) => held.push(v),
                    Err(e) => return Err(format!("after {i} open: {e}")),
                }
            }
            println!("{} open", held.len());
            Ok(())
        }
        "stream-many" => {
            // Value streams held open at once, until the host says no.
            let c = open(arg(1)?)?;
            let mut held = Vec::new();
            for i in 0..number(3)? {
                let value = c.get_data(arg(2)?, 0, u64::MAX)?;
                match IncomingValue::incoming_value_consume_async(value) {
                    Ok(s) => held.push(s),
                    Err(e) => return Err(format!("after {i} streams: {e}")),
                }
            }
            println!("{} streams", held.len());
            Ok(())
        }
        "finish-early" => {
            // Against the contract: finishing a value while its body stream
            // is still open, which traps.
            let c = open(arg(1)?)?;
            let value = OutgoingValue::new_outgoing_value();
            c.write_data(arg(2)?, &value)?;
            let body = value.outgoing_value_write_body().map_err(|()| "the body was already taken".to_string())?;
            write_all(&body, b"never stored")?;
            OutgoingValue::finish(value)?;
            drop(body);
            Ok(())
        }
        "write-many" => {
            // Outgoing values open at once, each finished at the end.
            let c = open(arg(1)?)?;
            let values: Vec<OutgoingValue> = (0..number(2)?).map(|_| OutgoingValue::new_outgoing_value()).collect();
            for (i, v) in values.iter().enumerate() {
                c.write_data(&format!("v{i}"), v)?;
            }
            for (i, v) in values.into_iter().enumerate() {
                OutgoingValue::finish(v).map_err(|e| format!("value {i}: {e}"))?;
            }
            println!("all written");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Store, list, read and delete, printing what happens.
fn demo() -> Result<()> {
    let notes = open_or_create("notes")?;
    put(&notes, "hello.txt", b"Hello from a plugin!\n")?;
    put(&notes, "copy-of-hello.txt", b"Hello from a plugin!\n")?;
    println!("stored hello.txt and copy-of-hello.txt (the same content, kept once)");
    println!("listing: {}", list(&notes, 1)?.join(", "));
    let hello = read_sync(&notes, "hello.txt", 0, u64::MAX)?;
    print!("hello.txt: {}", String::from_utf8_lossy(&hello));
    let word = read_sync(&notes, "hello.txt", 0, 4)?;
    println!("bytes 0..=4: {}", String::from_utf8_lossy(&word));
    store::move_object(&id("notes", "copy-of-hello.txt"), &id("notes", "moved.txt"))?;
    println!("moved copy-of-hello.txt to moved.txt");
    notes.delete_objects(&["hello.txt".to_string(), "moved.txt".to_string()])?;
    println!("deleted; has hello.txt: {}", notes.has_object("hello.txt")?);
    match read_sync(&notes, "hello.txt", 0, u64::MAX) {
        Ok(_) => return Err("a deleted object could still be read".into()),
        Err(e) => println!("reading it again: {e}"),
    }
    store::delete_container("notes")?;
    println!("container deleted");
    Ok(())
}

fn id(container: &str, object: &str) -> ObjectId {
    ObjectId { container: container.to_string(), object: object.to_string() }
}

fn open(name: &str) -> Result<Container> {
    store::get_container(name)
}

fn open_or_create(name: &str) -> Result<Container> {
    if store::container_exists(name)? { store::get_container(name) } else { store::create_container(name) }
}

/// Write `bytes` under `name` in `c`.
fn put(c: &Container, name: &str, bytes: &[u8]) -> Result<()> {
    let value = OutgoingValue::new_outgoing_value();
    c.write_data(name, &value)?;
    {
        let body = value.outgoing_value_write_body().map_err(|()| "the body was already taken".to_string())?;
        write_all(&body, bytes)?;
    }
    OutgoingValue::finish(value)
}

/// Write all of `bytes`, as `check-write` permits.
fn write_all(body: &wasi::io::streams::OutputStream, mut bytes: &[u8]) -> Result<()> {
    let pollable = body.subscribe();
    while !bytes.is_empty() {
        let permitted = body.check_write().map_err(stream_error)? as usize;
        if permitted == 0 {
            pollable.block();
            continue;
        }
        let n = permitted.min(bytes.len());
        body.write(&bytes[..n]).map_err(stream_error)?;
        bytes = &bytes[n..];
    }
    body.blocking_flush().map_err(stream_error)
}

fn stream_error(e: wasi::io::streams::StreamError) -> String {
    match e {
        wasi::io::streams::StreamError::LastOperationFailed(e) => e.to_debug_string(),
        wasi::io::streams::StreamError::Closed => "the stream is closed".into(),
    }
}

/// Bytes `start..=end` of `name`, in one list.
fn read_sync(c: &Container, name: &str, start: u64, end: u64) -> Result<Vec<u8>> {
    IncomingValue::incoming_value_consume_sync(c.get_data(name, start, end)?)
}

/// Every name in `c`, read `page` at a time.
fn list(c: &Container, page: u64) -> Result<Vec<String>> {
    let names = c.list_objects()?;
    let mut all = Vec::new();
    loop {
        let (mut some, end) = names.read_stream_object_names(page)?;
        all.append(&mut some);
        if end {
            return Ok(all);
        }
    }
}

/// The byte at `offset` of a generated value: a pattern no two nearby
/// MiB share, so a misplaced or repeated chunk is caught.
fn pattern(offset: u64) -> u8 {
    (offset ^ (offset >> 20).wrapping_mul(31)) as u8
}

fn write_generated(c: &Container, name: &str, size: u64) -> Result<()> {
    let value = OutgoingValue::new_outgoing_value();
    c.write_data(name, &value)?;
    {
        let body = value.outgoing_value_write_body().map_err(|()| "the body was already taken".to_string())?;
        let mut chunk = vec![0u8; 256 * 1024];
        let mut offset = 0;
        while offset < size {
            let n = chunk.len().min((size - offset) as usize);
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern(offset + i as u64);
            }
            write_all(&body, &chunk[..n])?;
            offset += n as u64;
        }
    }
    OutgoingValue::finish(value)
}

/// Read `name` back as a stream and compare it with the pattern.
fn check_generated(c: &Container, name: &str, size: u64) -> Result<u64> {
    let value = c.get_data(name, 0, u64::MAX)?;
    if value.size() != size {
        return Err(format!("{name} is {} bytes, not {size}", value.size()));
    }
    let body = IncomingValue::incoming_value_consume_async(value)?;
    let mut offset = 0u64;
    loop {
        match body.blocking_read(256 * 1024) {
            Ok(bytes) => {
                for (i, b) in bytes.iter().enumerate() {
                    if *b != pattern(offset + i as u64) {
                        return Err(format!("byte {} differs", offset + i as u64));
                    }
                }
                offset += bytes.len() as u64;
            }
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(stream_error(e)),
        }
    }
    if offset != size {
        return Err(format!("read {offset} bytes, not {size}"));
    }
    Ok(offset)
}
