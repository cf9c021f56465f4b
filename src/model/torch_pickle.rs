//! `pytorch_model.bin` as `torch.save` writes a state dict — the zip format (PyTorch >= 1.6:
//! `ARCHIVE/data.pkl` plus one file per storage under `ARCHIVE/data/`) and the legacy
//! format before it (a pickle stream followed by the raw storages) — read with a
//! restricted unpickler: it knows the handful of opcodes and globals a dict of tensors
//! needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, the typed storages) and refuses every other global,
//! so no code named by the file is ever run. Many biomedical BERTs on the Hugging Face hub
//! ship only this file (BioBERT v1.1 among them).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};

/// What the unpickler builds. Anything a state dict cannot hold has no variant. (Some
/// payloads are only ever shown, in error messages.)
#[allow(dead_code)]
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// An allowed global, before it is called.
    Global(Callable),
    /// A storage named by a persistent id: its key, element type and element count.
    Storage {
        key: String,
        kind: Kind,
        numel: i64,
    },
    /// A view of a storage, materialised once the storages are read.
    Tensor(TensorRef),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Callable {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    StorageType(Kind),
}

#[derive(Debug, Clone)]
struct TensorRef {
    key: String,
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The globals a state dict of tensors needs; `None` for every other one.
fn allowed_global(module: &str, name: &str) -> Option<Callable> {
    let storage = |kind| Some(Callable::StorageType(kind));
    match (module, name) {
        ("collections", "OrderedDict") => Some(Callable::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Callable::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Callable::RebuildParameter),
        ("torch", "FloatStorage") => storage(Kind::Float),
        ("torch", "DoubleStorage") => storage(Kind::Double),
        ("torch", "HalfStorage") => storage(Kind::Half),
        ("torch", "BFloat16Storage") => storage(Kind::BFloat16),
        ("torch", "LongStorage") => storage(Kind::Int64),
        ("torch", "IntStorage") => storage(Kind::Int),
        ("torch", "ShortStorage") => storage(Kind::Int16),
        ("torch", "CharStorage") => storage(Kind::Int8),
        ("torch", "ByteStorage") => storage(Kind::Uint8),
        ("torch", "BoolStorage") => storage(Kind::Bool),
        _ => None,
    }
}

/// A pickle stream's reader over a byte slice.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Whether persistent ids are the legacy format's (with a view-metadata field).
    what: &'a str,
}

const MARK_SENTINEL: &str = "a MARK where a value was expected";

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8], what: &'a str) -> Unpickler<'a> {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| anyhow!("{}: the pickle ends early", self.what))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }

    fn text(&mut self, n: usize) -> Result<String> {
        let what = self.what;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| anyhow!("{what}: a string that is not UTF-8"))
    }

    /// A newline-terminated line (the GLOBAL opcode's module and name).
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| anyhow!("{}: the pickle ends early", self.what))?;
        let line = self.text(end)?;
        self.pos += 1;
        Ok(line)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m == self.stack.len()) {
            bail!("{}: {MARK_SENTINEL}", self.what);
        }
        self.stack
            .pop()
            .ok_or_else(|| anyhow!("{}: the pickle pops an empty stack", self.what))
    }

    /// The values pushed since the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| anyhow!("{}: the pickle has no MARK to pop to", self.what))?;
        Ok(self.stack.split_off(mark))
    }

    /// Runs to STOP; returns the result.
    fn run(&mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO n
                }
                0x95 => {
                    self.take(8)?; // FRAME length
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(i64::from(v)))
                }
                0x8a => {
                    // LONG1: n bytes of little-endian two's complement.
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        bail!("{}: an integer wider than 64 bits", self.what);
                    }
                    let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into()?);
                    self.stack.push(Value::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        bail!("{}: the pickle pops an empty stack", self.what);
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'q' => {
                    let i = u32::from(self.u8()?);
                    self.put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.put(i)?
                }
                b'h' => {
                    let i = u32::from(self.u8()?);
                    self.get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.get(i)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let callable = allowed_global(&module, &name).ok_or_else(|| {
                        anyhow!(
                            "{}: refuses the global {module}.{name}: a state dict of tensors needs only OrderedDict, torch's tensor rebuild functions and storages, and nothing else is ever run",
                            self.what
                        )
                    })?;
                    self.stack.push(Value::Global(callable))
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_storage(pid)?;
                    self.stack.push(storage)
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.call(callable, args)?;
                    self.stack.push(result)
                }
                b'b' => {
                    // BUILD: the state of an OrderedDict (its _metadata) is not needed.
                    let _state = self.pop()?;
                    match self.stack.last() {
                        Some(Value::Dict(_)) => {}
                        _ => bail!("{}: BUILD on something other than a dict", self.what),
                    }
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_insert(vec![key, value])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.dict_insert(items)?
                }
                b'a' => {
                    let value = self.pop()?;
                    self.list_extend(vec![value])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?
                }
                other => bail!(
                    "{}: pickle opcode 0x{other:02x} at byte {} is not one a state dict needs",
                    self.what,
                    self.pos - 1
                ),
            }
        }
    }

    fn put(&mut self, i: u32) -> Result<()> {
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| anyhow!("{}: memoizes an empty stack", self.what))?;
        self.memo.insert(i, top);
        Ok(())
    }

    fn get(&mut self, i: u32) -> Result<()> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| anyhow!("{}: memo {i} used before it is set", self.what))?;
        self.stack.push(v);
        Ok(())
    }

    fn dict_insert(&mut self, items: Vec<Value>) -> Result<()> {
        let what = self.what;
        let Some(Value::Dict(dict)) = self.stack.last_mut() else {
            bail!("{what}: SETITEM on something other than a dict");
        };
        let mut items = items.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            dict.push((k, v));
        }
        Ok(())
    }

    fn list_extend(&mut self, items: Vec<Value>) -> Result<()> {
        let what = self.what;
        let Some(Value::List(list)) = self.stack.last_mut() else {
            bail!("{what}: APPEND on something other than a list");
        };
        list.extend(items);
        Ok(())
    }

    /// ('storage', StorageType, key, location, numel[, view metadata]).
    fn persistent_storage(&self, pid: Value) -> Result<Value> {
        let Value::Tuple(fields) = pid else {
            bail!("{}: a persistent id that is not a tuple", self.what);
        };
        match fields.as_slice() {
            [Value::Str(tag), Value::Global(Callable::StorageType(kind)), Value::Str(key), _, Value::Int(numel), rest @ ..]
                if tag == "storage" && rest.iter().all(|v| matches!(v, Value::None)) =>
            {
                Ok(Value::Storage {
                    key: key.clone(),
                    kind: *kind,
                    numel: *numel,
                })
            }
            _ => bail!(
                "{}: a persistent id that is not a plain storage ({fields:?})",
                self.what
            ),
        }
    }

    fn call(&self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(callable) = callable else {
            bail!(
                "{}: calls something that is not an allowed global",
                self.what
            );
        };
        let Value::Tuple(args) = args else {
            bail!("{}: call arguments that are not a tuple", self.what);
        };
        match (callable, args.as_slice()) {
            (Callable::OrderedDict, []) => Ok(Value::Dict(Vec::new())),
            (
                Callable::RebuildTensor,
                [Value::Storage { key, kind, numel }, Value::Int(offset), Value::Tuple(size), Value::Tuple(stride), _requires_grad, _hooks, ..],
            ) => {
                let ints = |v: &[Value]| -> Result<Vec<i64>> {
                    v.iter()
                        .map(|x| match x {
                            Value::Int(i) => Ok(*i),
                            _ => Err(anyhow!(
                                "{}: a tensor shape that is not integers",
                                self.what
                            )),
                        })
                        .collect()
                };
                let (size, stride) = (ints(size)?, ints(stride)?);
                check_view(*numel, *offset, &size, &stride)
                    .map_err(|e| anyhow!("{}: {e}", self.what))?;
                Ok(Value::Tensor(TensorRef {
                    key: key.clone(),
                    kind: *kind,
                    offset: *offset,
                    size,
                    stride,
                }))
            }
            (Callable::RebuildParameter, [tensor @ Value::Tensor(_), _requires_grad, ..]) => {
                Ok(tensor.clone())
            }
            (c, a) => bail!(
                "{}: {c:?} called with arguments a state dict does not use ({} of them)",
                self.what,
                a.len()
            ),
        }
    }
}

/// The view must lie inside its storage: a file could otherwise make us read past it.
fn check_view(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Result<(), String> {
    if size.len() != stride.len() || offset < 0 || size.iter().chain(stride).any(|&x| x < 0) {
        return Err(format!(
            "a tensor view with size {size:?}, stride {stride:?}, offset {offset}"
        ));
    }
    if size.contains(&0) {
        return Ok(());
    }
    let last = size.iter().zip(stride).try_fold(offset, |acc, (&n, &s)| {
        acc.checked_add((n - 1).checked_mul(s)?)
    });
    match last {
        Some(last) if last < numel => Ok(()),
        _ => Err(format!(
            "a tensor view (size {size:?}, stride {stride:?}, offset {offset}) beyond its storage of {numel} elements"
        )),
    }
}

/// The name -> tensor pairs of a `torch.save`d state dict.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let what = path.display().to_string();
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(&bytes, &what)
    } else if bytes.starts_with(b"\x80\x02\x8a") {
        read_legacy(&bytes, &what)
    } else {
        bail!("{what}: neither torch.save's zip format nor its legacy format")
    }
}

fn read_zip(bytes: &[u8], what: &str) -> Result<Vec<(String, Tensor)>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .with_context(|| format!("{what}: not a readable zip archive"))?;
    let pkl_name = archive
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{what}: no ARCHIVE/data.pkl: not a torch.save file"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let mut pkl = Vec::new();
    archive
        .by_name(&pkl_name)?
        .read_to_end(&mut pkl)
        .with_context(|| format!("{what}: reading {pkl_name}"))?;
    let root = Unpickler::new(&pkl, what).run()?;
    let mut storage = |key: &str| -> Result<Vec<u8>> {
        let mut data = Vec::new();
        archive
            .by_name(&format!("{prefix}data/{key}"))
            .with_context(|| format!("{what}: storage {key} is missing"))?
            .read_to_end(&mut data)?;
        Ok(data)
    };
    materialise(root, what, &mut storage)
}

/// The legacy format: pickles for the magic number, the protocol version and the system
/// info, the state dict, then the list of storage keys, then each storage as an i64
/// element count and its raw bytes.
fn read_legacy(bytes: &[u8], what: &str) -> Result<Vec<(String, Tensor)>> {
    // The first pickle is torch's magic number, an 80-bit integer: compared as bytes.
    const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
    if !bytes.starts_with(MAGIC) {
        bail!("{what}: not a torch.save file (wrong magic number)");
    }
    let mut pos = MAGIC.len();
    let next = |pos: &mut usize| -> Result<Value> {
        let mut u = Unpickler::new(&bytes[*pos..], what);
        let v = u.run()?;
        *pos += u.pos;
        Ok(v)
    };
    let _protocol = next(&mut pos)?;
    let _system = next(&mut pos)?;
    let root = next(&mut pos)?;
    let Value::List(keys) = next(&mut pos)? else {
        bail!("{what}: no list of storage keys after the state dict");
    };
    let mut raw: HashMap<String, (usize, usize)> = HashMap::new();
    let kinds = storage_kinds(&root);
    for key in keys {
        let Value::Str(key) = key else {
            bail!("{what}: a storage key that is not a string");
        };
        let kind = *kinds
            .get(&key)
            .ok_or_else(|| anyhow!("{what}: storage {key} is never used"))?;
        let count = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| anyhow!("{what}: ends inside storage {key}"))?;
        let count = i64::from_le_bytes(count.try_into()?);
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(kind.elt_size_in_bytes()))
            .ok_or_else(|| anyhow!("{what}: storage {key} has {count} elements"))?;
        let start = pos + 8;
        if start + len > bytes.len() {
            bail!("{what}: ends inside storage {key}");
        }
        raw.insert(key, (start, len));
        pos = start + len;
    }
    let mut storage = |key: &str| -> Result<Vec<u8>> {
        let (start, len) = raw
            .get(key)
            .ok_or_else(|| anyhow!("{what}: storage {key} is missing"))?;
        Ok(bytes[*start..start + len].to_vec())
    };
    materialise(root, what, &mut storage)
}

/// The element type of every storage the state dict's tensors use.
fn storage_kinds(root: &Value) -> HashMap<String, Kind> {
    let mut kinds = HashMap::new();
    if let Value::Dict(items) = root {
        for (_, v) in items {
            if let Value::Tensor(t) = v {
                kinds.insert(t.key.clone(), t.kind);
            }
        }
    }
    kinds
}

/// Builds each tensor from its storage's bytes: a contiguous copy of the view.
fn materialise(
    root: Value,
    what: &str,
    storage: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
) -> Result<Vec<(String, Tensor)>> {
    let Value::Dict(items) = root else {
        bail!("{what}: holds no dict of tensors");
    };
    let mut cache: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (name, value) in items {
        let Value::Str(name) = name else {
            bail!("{what}: a state dict key that is not a string");
        };
        let Value::Tensor(t) = value else {
            bail!("{what}: {name} is not a tensor");
        };
        if !cache.contains_key(&t.key) {
            let data = storage(&t.key)?;
            let elements = (data.len() / t.kind.elt_size_in_bytes()) as i64;
            let tensor = Tensor::f_from_data_size(&data, &[elements], t.kind)?;
            cache.insert(t.key.clone(), tensor);
        }
        let base = &cache[&t.key];
        check_view(base.numel() as i64, t.offset, &t.size, &t.stride)
            .map_err(|e| anyhow!("{what}: {name}: {e}"))?;
        let view = base.f_as_strided(&t.size, &t.stride, Some(t.offset))?;
        out.push((name, view.f_contiguous()?.copy()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_must_stay_inside_their_storage() {
        assert!(check_view(10, 0, &[2, 5], &[5, 1]).is_ok());
        assert!(check_view(10, 5, &[5], &[1]).is_ok());
        assert!(check_view(10, 6, &[5], &[1]).is_err());
        assert!(check_view(10, 0, &[3, 5], &[5, 1]).is_err());
        assert!(check_view(10, 0, &[2], &[1, 1]).is_err());
        assert!(check_view(0, 0, &[0, 3], &[3, 1]).is_ok());
    }

    #[test]
    fn globals_outside_the_list_are_refused_before_anything_runs() {
        // GLOBAL 'os system' — the classic __reduce__ payload.
        let pickle = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
        let err = Unpickler::new(pickle, "evil.bin")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("refuses the global os.system"), "{err}");
    }

    #[test]
    fn truncated_pickles_are_errors() {
        let err = Unpickler::new(b"\x80\x02}q\x00(X\x05\x00\x00", "t.bin")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ends early"), "{err}");
    }
}
