//! The subset of Python's pickle machine that `torch.save` uses (protocol 2, with the protocol-4 opcodes a newer
//! pickler may emit), evaluated without running anything: globals stay names, and the only calls given a meaning
//! are the ones that rebuild tensors, their storages and ordered dicts. Every other call is an opaque object,
//! which is an error only if the caller asks for it.
//!
//! Memory is bounded by the pickle's size: every opcode adds at most one value, and shared values are reference
//! counted (so that a memo fetched many times is not copied). Values are dropped without recursion, so that no
//! nesting, however deep, can overflow the stack; a value that contains itself (a cycle) is leaked, within that
//! bound.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A key and its value in a dict.
pub type Pair = (Rc<Value>, Rc<Value>);

/// A value of the pickle machine.
#[derive(Debug)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A bytes object (only its length is kept).
    Bytes(usize),
    /// A tuple.
    Tuple(Vec<Rc<Value>>),
    /// A list (mutable: pickles append to a list after memoizing it).
    List(RefCell<Vec<Rc<Value>>>),
    /// A dict or `OrderedDict`, in insertion order (mutable, as a list).
    Dict(RefCell<Vec<Pair>>),
    /// A global, `module.name`.
    Global(String, String),
    /// A typed storage: `('storage', torch.<T>Storage, key, location, numel)`.
    Storage {
        /// The storage class name, as `FloatStorage`.
        class: String,
        /// Its key: the member `data/<key>` of the archive.
        key: String,
        /// Its number of elements.
        numel: u64,
    },
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    Tensor {
        /// The storage.
        storage: Rc<Value>,
        /// The first element's index in the storage.
        offset: u64,
        /// The shape.
        size: Vec<u64>,
        /// The strides, in elements.
        stride: Vec<u64>,
    },
    /// The result of any other call, named by what was called.
    Object(String),
}

impl Value {
    /// A short description for messages, as `a dict` or `a torch.nn.Module object`.
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) => "an int".into(),
            Value::Float(_) => "a float".into(),
            Value::Str(_) => "a string".into(),
            Value::Bytes(_) => "a bytes object".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(m, n) => format!("the global {m}.{n}"),
            Value::Storage { .. } => "a storage".into(),
            Value::Tensor { .. } => "a tensor".into(),
            Value::Object(name) => format!("a {name} object"),
        }
    }
}

/// A pickle that cannot be evaluated: the byte offset (within the pickle) and what is wrong there.
#[derive(Debug)]
pub struct PickleError {
    /// Where, in bytes from the pickle's start.
    pub offset: usize,
    /// What.
    pub what: String,
}

enum Slot {
    Mark,
    Value(Rc<Value>),
}

struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Rc<Value>>,
}

/// Evaluates a pickle: returns the value `STOP` leaves.
pub fn load(bytes: &[u8]) -> Result<Rc<Value>, PickleError> {
    let mut m = Machine {
        bytes,
        at: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let op_at = m.at;
        let op = m.take(1)?[0];
        if op == b'.' {
            return m.pop_value(op_at);
        }
        m.step(op, op_at).map_err(|what| PickleError { offset: op_at, what })?;
    }
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(PickleError {
                offset: self.bytes.len(),
                what: "the pickle ends early (no STOP opcode)".into(),
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.take(N).map_err(|e| e.what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn len_prefixed(&mut self, len: u64) -> Result<&[u8], String> {
        let n = usize::try_from(len).map_err(|_| format!("a length of {len} bytes"))?;
        self.take(n).map_err(|e| e.what)
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the pickle ends inside a GLOBAL name")?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| "a GLOBAL name is not UTF-8")?
            .to_string();
        self.at += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Value(Rc::new(v)));
    }

    fn push_rc(&mut self, v: Rc<Value>) {
        self.stack.push(Slot::Value(v));
    }

    fn pop_value(&mut self, at: usize) -> Result<Rc<Value>, PickleError> {
        match self.stack.pop() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => Err(PickleError {
                offset: at,
                what: "a MARK where a value was expected".into(),
            }),
            None => Err(PickleError {
                offset: at,
                what: "the stack is empty".into(),
            }),
        }
    }

    fn pop(&mut self) -> Result<Rc<Value>, String> {
        self.pop_value(self.at).map_err(|e| e.what)
    }

    /// The values above the topmost mark.
    fn pop_to_mark(&mut self) -> Result<Vec<Rc<Value>>, String> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or("no MARK on the stack")?;
        Ok(self
            .stack
            .drain(mark..)
            .filter_map(|s| match s {
                Slot::Value(v) => Some(v),
                Slot::Mark => None,
            })
            .collect())
    }

    fn top(&self) -> Result<Rc<Value>, String> {
        match self.stack.last() {
            Some(Slot::Value(v)) => Ok(v.clone()),
            _ => Err("no value on the stack".into()),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let v = self.top()?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} was never stored"))?;
        self.push_rc(v);
        Ok(())
    }

    fn tuple_of(&mut self, n: usize) -> Result<(), String> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.pop()?);
        }
        items.reverse();
        self.push(Value::Tuple(items));
        Ok(())
    }

    fn step(&mut self, op: u8, op_at: usize) -> Result<(), String> {
        match op {
            0x80 => drop(self.fixed::<1>()?), // PROTO
            0x95 => drop(self.fixed::<8>()?), // FRAME
            b'(' => self.stack.push(Slot::Mark),
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.fixed()?);
                self.push(Value::Int(v as i64))
            }
            b'K' => {
                let v = self.fixed::<1>()?[0];
                self.push(Value::Int(v as i64))
            }
            b'M' => {
                let v = u16::from_le_bytes(self.fixed()?);
                self.push(Value::Int(v as i64))
            }
            0x8a => {
                // LONG1: n little-endian two's-complement bytes.
                let n = self.fixed::<1>()?[0] as usize;
                let v = long(self.len_prefixed(n as u64)?);
                self.push(Value::Int(
                    v.ok_or_else(|| format!("an integer of {n} bytes does not fit in int64"))?,
                ))
            }
            b'G' => {
                let v = f64::from_be_bytes(self.fixed()?);
                self.push(Value::Float(v))
            }
            b'X' => {
                let n = u32::from_le_bytes(self.fixed()?) as u64;
                self.unicode(n)?
            }
            0x8c => {
                let n = self.fixed::<1>()?[0] as u64;
                self.unicode(n)?
            }
            0x8d => {
                let n = u64::from_le_bytes(self.fixed()?);
                self.unicode(n)?
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => u32::from_le_bytes(self.fixed()?) as u64,
                    b'C' => self.fixed::<1>()?[0] as u64,
                    _ => u64::from_le_bytes(self.fixed()?),
                };
                let len = self.len_prefixed(n)?.len();
                self.push(Value::Bytes(len))
            }
            b')' => self.push(Value::Tuple(Vec::new())),
            0x85 => self.tuple_of(1)?,
            0x86 => self.tuple_of(2)?,
            0x87 => self.tuple_of(3)?,
            b't' => {
                let items = self.pop_to_mark()?;
                self.push(Value::Tuple(items))
            }
            b']' => self.push(Value::List(RefCell::new(Vec::new()))),
            b'l' => {
                let items = self.pop_to_mark()?;
                self.push(Value::List(RefCell::new(items)))
            }
            b'}' => self.push(Value::Dict(RefCell::new(Vec::new()))),
            b'd' => {
                let items = pairs(self.pop_to_mark()?)?;
                self.push(Value::Dict(RefCell::new(items)))
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?
            }
            b'e' => {
                let items = self.pop_to_mark()?;
                self.extend_list(items)?
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_dict(vec![(k, v)])?
            }
            b'u' => {
                let items = pairs(self.pop_to_mark()?)?;
                self.extend_dict(items)?
            }
            b'q' => {
                let k = self.fixed::<1>()?[0] as u32;
                self.memo_put(k)?
            }
            b'r' => {
                let k = u32::from_le_bytes(self.fixed()?);
                self.memo_put(k)?
            }
            0x94 => {
                let k = u32::try_from(self.memo.len()).map_err(|_| "too many memo entries")?;
                self.memo_put(k)?
            }
            b'h' => {
                let k = self.fixed::<1>()?[0] as u32;
                self.memo_get(k)?
            }
            b'j' => {
                let k = u32::from_le_bytes(self.fixed()?);
                self.memo_get(k)?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(module, name))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (&*module, &*name) {
                    (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m.clone(), n.clone())),
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                self.push(storage(&pid)?)
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push(call(&callable, &args)?)
            }
            b'b' => {
                // BUILD sets an object's state (an OrderedDict's `_metadata`, a parameter's hooks): not needed.
                self.pop()?;
                self.top()?;
            }
            b'0' => drop(self.pop()?),
            b'2' => {
                let v = self.top()?;
                self.push_rc(v)
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x} (at byte {op_at})")),
        }
        Ok(())
    }

    fn unicode(&mut self, n: u64) -> Result<(), String> {
        let s = std::str::from_utf8(self.len_prefixed(n)?).map_err(|_| "a string is not valid UTF-8")?;
        let s = s.to_string();
        self.push(Value::Str(s));
        Ok(())
    }

    fn extend_list(&mut self, items: Vec<Rc<Value>>) -> Result<(), String> {
        let list = self.top()?;
        let Value::List(cell) = &*list else {
            return Err(format!("APPEND to {}, not a list", list.kind()));
        };
        cell.borrow_mut().extend(items);
        Ok(())
    }

    fn extend_dict(&mut self, items: Vec<Pair>) -> Result<(), String> {
        let dict = self.top()?;
        let Value::Dict(cell) = &*dict else {
            return Err(format!("SETITEM on {}, not a dict", dict.kind()));
        };
        cell.borrow_mut().extend(items);
        Ok(())
    }
}

impl Drop for Value {
    /// Drops the values this one holds without recursion: the children whose last reference this was are moved
    /// to a work list and emptied there, so that a deeply nested value cannot overflow the stack.
    fn drop(&mut self) {
        let mut work = Vec::new();
        self.move_children(&mut work);
        while let Some(child) = work.pop() {
            if let Ok(mut v) = Rc::try_unwrap(child) {
                v.move_children(&mut work);
            }
        }
    }
}

impl Value {
    fn move_children(&mut self, work: &mut Vec<Rc<Value>>) {
        match self {
            Value::Tuple(items) => work.append(items),
            Value::List(items) => work.append(items.get_mut()),
            Value::Dict(items) => {
                for (k, v) in items.get_mut().drain(..) {
                    work.push(k);
                    work.push(v);
                }
            }
            _ => {}
        }
    }
}

/// A LONG1 integer: little-endian two's complement of up to 8 bytes.
fn long(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return Some(0);
    }
    if b.len() > 8 {
        return None;
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut a = [fill; 8];
    a[..b.len()].copy_from_slice(b);
    Some(i64::from_le_bytes(a))
}

fn pairs(items: Vec<Rc<Value>>) -> Result<Vec<Pair>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("an odd number of items for a dict".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn int(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        other => Err(format!("{what} is {}, not a non-negative int", other.kind())),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    match v {
        Value::Tuple(items) => items.iter().map(|i| int(i, what)).collect(),
        // torch.Size pickles as a tuple; a list is accepted too.
        Value::List(items) => items.borrow().iter().map(|i| int(i, what)).collect(),
        other => Err(format!("{what} is {}, not a tuple", other.kind())),
    }
}

/// The value of a persistent id: a storage reference.
fn storage(pid: &Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("a persistent id is {}, not a tuple", pid.kind()));
    };
    match items.as_slice() {
        [tag, class, key, _location, numel] if matches!(&**tag, Value::Str(s) if s == "storage") => {
            let class = match &**class {
                Value::Global(m, n) if m == "torch" => n.clone(),
                other => return Err(format!("a storage type is {}, not a torch storage class", other.kind())),
            };
            let key = match &**key {
                Value::Str(s) => s.clone(),
                other => return Err(format!("a storage key is {}, not a string", other.kind())),
            };
            Ok(Value::Storage {
                class,
                key,
                numel: int(numel, "a storage's size")?,
            })
        }
        _ => Err("a persistent id that is not ('storage', type, key, location, size)".into()),
    }
}

/// What a call (REDUCE or NEWOBJ) evaluates to.
fn call(callable: &Value, args: &Value) -> Result<Value, String> {
    let Value::Global(module, name) = callable else {
        return Ok(Value::Object(format!("call of {}", callable.kind())));
    };
    let Value::Tuple(a) = args else {
        return Err(format!(
            "the arguments of {module}.{name} are {}, not a tuple",
            args.kind()
        ));
    };
    Ok(match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") => {
            let [storage, offset, size, stride, ..] = a.as_slice() else {
                return Err(format!(
                    "_rebuild_tensor_v2 takes at least 4 arguments, found {}",
                    a.len()
                ));
            };
            if !matches!(&**storage, Value::Storage { .. }) {
                return Err(format!("a tensor's storage is {}", storage.kind()));
            }
            let (size, stride) = (ints(size, "a tensor's size")?, ints(stride, "a tensor's stride")?);
            if size.len() != stride.len() {
                return Err(format!(
                    "a tensor of {} dimensions with {} strides",
                    size.len(),
                    stride.len()
                ));
            }
            Value::Tensor {
                storage: storage.clone(),
                offset: int(offset, "a tensor's storage offset")?,
                size,
                stride,
            }
        }
        // `torch.nn.Parameter`: the tensor it wraps.
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => match a.first() {
            Some(t) if matches!(&**t, Value::Tensor { .. }) => clone_tensor(t),
            _ => return Err("_rebuild_parameter without a tensor".into()),
        },
        ("collections", "OrderedDict") if a.is_empty() => Value::Dict(RefCell::new(Vec::new())),
        _ => Value::Object(format!("{module}.{name}")),
    })
}

fn clone_tensor(t: &Value) -> Value {
    match t {
        Value::Tensor {
            storage,
            offset,
            size,
            stride,
        } => Value::Tensor {
            storage: storage.clone(),
            offset: *offset,
            size: size.clone(),
            stride: stride.clone(),
        },
        _ => unreachable!("checked to be a tensor"),
    }
}

#[cfg(test)]
#[path = "pickle_tests.rs"]
mod tests;
