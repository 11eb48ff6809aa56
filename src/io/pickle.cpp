#include "io/pickle.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "error.h"
#include "io/zip.h"

namespace rsam::io::detail {
namespace {

using Kind = PyValue::Kind;

// Far above anything a state dict needs (Python batches SETITEMS by 1000),
// low enough that hostile input cannot exhaust memory through them.
constexpr size_t kMaxStack = size_t(1) << 20;
constexpr size_t kMaxMarks = 4096;
constexpr size_t kMaxMemo = size_t(1) << 24;
constexpr size_t kMaxDims = 64;

[[noreturn]] void fail(const std::string& msg) { throw Error("pickle: " + msg); }

struct Global {
  const char* module;
  const char* name;
  PyGlobal kind;
  DType dtype;
};

constexpr Global kGlobals[] = {
    {"collections", "OrderedDict", PyGlobal::OrderedDict, DType::U8},
    {"torch._utils", "_rebuild_tensor_v2", PyGlobal::RebuildTensorV2, DType::U8},
    {"torch._utils", "_rebuild_tensor", PyGlobal::RebuildTensor, DType::U8},
    {"torch._utils", "_rebuild_parameter", PyGlobal::RebuildParameter, DType::U8},
    {"torch._utils", "_rebuild_parameter_with_state", PyGlobal::RebuildParameterWithState, DType::U8},
    {"torch", "FloatStorage", PyGlobal::StorageType, DType::F32},
    {"torch", "HalfStorage", PyGlobal::StorageType, DType::F16},
    {"torch", "BFloat16Storage", PyGlobal::StorageType, DType::BF16},
    {"torch", "DoubleStorage", PyGlobal::StorageType, DType::F64},
    {"torch", "LongStorage", PyGlobal::StorageType, DType::I64},
    {"torch", "IntStorage", PyGlobal::StorageType, DType::I32},
    {"torch", "ShortStorage", PyGlobal::StorageType, DType::I16},
    {"torch", "CharStorage", PyGlobal::StorageType, DType::I8},
    {"torch", "ByteStorage", PyGlobal::StorageType, DType::U8},
    {"torch", "BoolStorage", PyGlobal::StorageType, DType::Bool},
    {"torch", "UntypedStorage", PyGlobal::StorageType, DType::U8},
    {"torch.storage", "UntypedStorage", PyGlobal::StorageType, DType::U8},
    {"torch", "float32", PyGlobal::DTypeObject, DType::F32},
    {"torch", "float", PyGlobal::DTypeObject, DType::F32},
    {"torch", "float16", PyGlobal::DTypeObject, DType::F16},
    {"torch", "half", PyGlobal::DTypeObject, DType::F16},
    {"torch", "bfloat16", PyGlobal::DTypeObject, DType::BF16},
    {"torch", "float64", PyGlobal::DTypeObject, DType::F64},
    {"torch", "double", PyGlobal::DTypeObject, DType::F64},
    {"torch", "int64", PyGlobal::DTypeObject, DType::I64},
    {"torch", "long", PyGlobal::DTypeObject, DType::I64},
    {"torch", "int32", PyGlobal::DTypeObject, DType::I32},
    {"torch", "int", PyGlobal::DTypeObject, DType::I32},
    {"torch", "int16", PyGlobal::DTypeObject, DType::I16},
    {"torch", "short", PyGlobal::DTypeObject, DType::I16},
    {"torch", "int8", PyGlobal::DTypeObject, DType::I8},
    {"torch", "uint8", PyGlobal::DTypeObject, DType::U8},
    {"torch", "bool", PyGlobal::DTypeObject, DType::Bool},
};

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, size_t pos, PickleContext& ctx, bool allow_persistent)
      : d_(data), n_(size), pos_(pos), ctx_(ctx), allow_persistent_(allow_persistent) {}

  PyValue* run();
  size_t pos() const { return pos_; }

 private:
  // --- input ---
  void need(uint64_t len) const {
    if (pos_ > n_ || len > n_ - pos_) fail("truncated data at offset " + std::to_string(pos_));
  }
  uint64_t uint_le(int bytes) {
    need(bytes);
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; --k) v = v << 8 | d_[pos_ + k];
    pos_ += bytes;
    return v;
  }
  std::string take(uint64_t len) {
    need(len);
    std::string s(reinterpret_cast<const char*>(d_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }
  std::string line() {
    need(0);
    const void* nl = std::memchr(d_ + pos_, '\n', n_ - pos_);
    if (nl == nullptr) fail("unterminated text argument at offset " + std::to_string(pos_));
    const size_t len = static_cast<const uint8_t*>(nl) - (d_ + pos_);
    std::string s = take(len);
    ++pos_;
    return s;
  }
  static int64_t parse_int(std::string s, const char* what) {
    if (!s.empty() && s.back() == 'L') s.pop_back();
    if (s.empty() || s.size() > 20) fail(std::string("bad ") + what + " argument");
    size_t k = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (k == s.size()) fail(std::string("bad ") + what + " argument");
    uint64_t mag = 0;
    for (; k < s.size(); ++k) {
      if (s[k] < '0' || s[k] > '9') fail(std::string("bad ") + what + " argument");
      if (mag > (uint64_t(1) << 63) / 10) fail(std::string(what) + " argument out of range");
      mag = mag * 10 + uint64_t(s[k] - '0');
    }
    const bool neg = s[0] == '-';
    if (mag > (uint64_t(1) << 63) - (neg ? 0 : 1)) fail(std::string(what) + " argument out of range");
    return neg ? int64_t(0 - mag) : int64_t(mag);
  }

  // Protocols 0/1 spell the legacy magic number as decimal text; values past
  // int64 become BigInt with the same little-endian bytes LONG1 would carry.
  PyValue* text_long(std::string s) {
    if (!s.empty() && s.back() == 'L') s.pop_back();
    if (s.size() <= 18 || s[0] == '-' || s.size() > 64) return make_int(parse_int(s, "LONG"));
    std::string le;  // magnitude, little-endian base 256
    for (char c : s) {
      if (c < '0' || c > '9') fail("bad LONG argument");
      unsigned carry = static_cast<unsigned>(c - '0');
      for (char& byte : le) {
        const unsigned v = static_cast<uint8_t>(byte) * 10u + carry;
        byte = static_cast<char>(v & 0xFF);
        carry = v >> 8;
      }
      if (carry != 0) le.push_back(static_cast<char>(carry));
    }
    if (!le.empty() && (static_cast<uint8_t>(le.back()) & 0x80)) le.push_back('\0');  // keep it positive
    return make_long(le);
  }
  // Protocol-0 text strings: latin-1 bytes plus \uXXXX / \UXXXXXXXX escapes, as UTF-8.
  static std::string raw_unicode_escape(const std::string& in) {
    auto utf8 = [](std::string& out, uint32_t cp) {
      if (cp > 0x10FFFF) fail("bad UNICODE escape");
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | cp >> 6);
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | cp >> 12);
        out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | cp >> 18);
        out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
        out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    };
    std::string out;
    for (size_t i = 0; i < in.size(); ++i) {
      const size_t digits = in[i] == '\\' && i + 1 < in.size() ? (in[i + 1] == 'u' ? 4 : in[i + 1] == 'U' ? 8 : 0) : 0;
      if (digits == 0 || i + 2 + digits > in.size()) {
        utf8(out, static_cast<uint8_t>(in[i]));
        continue;
      }
      uint32_t cp = 0;
      for (size_t k = 0; k < digits; ++k) {
        const char h = in[i + 2 + k];
        const int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (v < 0) fail("bad UNICODE escape");
        cp = cp << 4 | static_cast<uint32_t>(v);
      }
      utf8(out, cp);
      i += 1 + digits;
    }
    return out;
  }

  // --- stack ---
  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(PyValue* v) {
    if (stack_.size() >= kMaxStack) fail("stack too deep");
    stack_.push_back(v);
  }
  PyValue* pop() {
    if (stack_.size() <= fence()) fail("stack underflow at offset " + std::to_string(pos_));
    PyValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PyValue* top() {
    if (stack_.size() <= fence()) fail("stack underflow at offset " + std::to_string(pos_));
    return stack_.back();
  }
  std::vector<PyValue*> pop_mark() {
    if (marks_.empty()) fail("missing MARK at offset " + std::to_string(pos_));
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyValue*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  // --- values ---
  PyValue* make(Kind k) {
    ctx_.arena.emplace_back();
    ctx_.arena.back().kind = k;
    return &ctx_.arena.back();
  }
  PyValue* make_int(int64_t v, Kind k = Kind::Int) {
    PyValue* p = make(k);
    p->i = v;
    return p;
  }
  PyValue* make_str(std::string s, Kind k) {
    PyValue* p = make(k);
    p->s = std::move(s);
    return p;
  }
  PyValue* make_long(const std::string& raw) {
    if (raw.size() <= 8) {
      uint64_t v = 0;
      for (size_t k = raw.size(); k-- > 0;) v = v << 8 | static_cast<uint8_t>(raw[k]);
      if (!raw.empty() && raw.size() < 8 && (static_cast<uint8_t>(raw.back()) & 0x80))
        v |= ~uint64_t(0) << (8 * raw.size());  // sign-extend
      return make_int(static_cast<int64_t>(v));
    }
    return make_str(raw, Kind::BigInt);  // only the legacy magic number is this big
  }
  static void expect(const PyValue* v, Kind k, const char* what) {
    if (v->kind != k) fail(std::string(what) + " must be a " + kind_name(k) + ", got " + kind_name(v->kind));
  }
  void set_item(PyValue* dict, PyValue* key, PyValue* value) {
    expect(dict, Kind::Dict, "SETITEM target");
    if (key->kind == Kind::Str) {
      auto [it, fresh] = dict->str_keys.emplace(key->s, dict->items.size());
      if (!fresh) {  // Python dict semantics: overwrite in place, keep first position
        dict->items[it->second + 1] = value;
        return;
      }
    }
    dict->items.push_back(key);
    dict->items.push_back(value);
  }
  void memo_put(uint64_t idx) {
    PyValue* v = top();
    auto it = memo_.find(idx);
    if (it == memo_.end()) {
      if (memo_.size() >= kMaxMemo) fail("memo too large");
      memo_.emplace(idx, v);
    } else {
      it->second = v;
    }
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo key " + std::to_string(idx) + " not found");
    push(it->second);
  }

  // Opcode groups of run(): true when `op` belonged to the group.
  bool stack_op(uint8_t op);
  bool scalar_op(uint8_t op);
  bool string_op(uint8_t op);
  bool container_op(uint8_t op);
  bool memo_op(uint8_t op);
  bool object_op(uint8_t op);

  PyValue* global(const std::string& module, const std::string& name);
  PyValue* call(PyValue* callable, PyValue* args);
  PyValue* persistent_load(PyValue* pid);
  static std::vector<int64_t> int_tuple(const PyValue* v, const char* what);

  const uint8_t* d_;
  size_t n_;
  size_t pos_;
  PickleContext& ctx_;
  bool allow_persistent_;
  std::vector<PyValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyValue*> memo_;
};

PyValue* Machine::global(const std::string& module, const std::string& name) {
  for (const Global& g : kGlobals) {
    if (module == g.module && name == g.name) {
      PyValue* v = make(Kind::Global);
      v->global = g.kind;
      v->dtype = g.dtype;
      v->s = module + "." + name;
      return v;
    }
  }
  fail("refuses pickle global " + printable(module) + "." + printable(name) +
       " (only torch state-dict globals are allowed)");
}

std::vector<int64_t> Machine::int_tuple(const PyValue* v, const char* what) {
  if (v->kind != Kind::Tuple && v->kind != Kind::List) fail(std::string(what) + " must be a tuple of ints");
  if (v->items.size() > kMaxDims) fail(std::string(what) + " has too many dimensions");
  std::vector<int64_t> out;
  for (const PyValue* e : v->items) {
    if (e->kind != Kind::Int) fail(std::string(what) + " must be a tuple of ints");
    out.push_back(e->i);
  }
  return out;
}

PyValue* Machine::call(PyValue* callable, PyValue* args) {
  if (callable->kind != Kind::Global) fail(std::string("cannot call a ") + kind_name(callable->kind));
  expect(args, Kind::Tuple, "call arguments");
  const auto& a = args->items;
  auto arity = [&](size_t lo, size_t hi) {
    if (a.size() < lo || a.size() > hi) fail(callable->s + " called with " + std::to_string(a.size()) + " arguments");
  };
  switch (callable->global) {
    case PyGlobal::OrderedDict:
      arity(0, 0);
      return make(Kind::Dict);
    case PyGlobal::RebuildTensorV2:
    case PyGlobal::RebuildTensor: {
      // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
      if (callable->global == PyGlobal::RebuildTensor) arity(4, 4); else arity(6, 7);
      expect(a[0], Kind::Storage, "tensor storage");
      expect(a[1], Kind::Int, "tensor storage offset");
      PyValue* t = make(Kind::Tensor);
      t->storage = a[0];
      t->dtype = a[0]->dtype;
      t->storage_offset = a[1]->i;
      t->shape = int_tuple(a[2], "tensor size");
      t->stride = int_tuple(a[3], "tensor stride");
      if (t->shape.size() != t->stride.size()) fail("tensor size and stride differ in length");
      return t;
    }
    case PyGlobal::RebuildParameter:
    case PyGlobal::RebuildParameterWithState:
      // (data, requires_grad, backward_hooks[, state]): the parameter is its data.
      if (callable->global == PyGlobal::RebuildParameter) arity(3, 3); else arity(4, 4);
      expect(a[0], Kind::Tensor, "parameter data");
      return a[0];
    case PyGlobal::StorageType:
    case PyGlobal::DTypeObject:
      break;
  }
  fail(callable->s + " is not callable here");
}

PyValue* Machine::persistent_load(PyValue* pid) {
  if (!allow_persistent_) fail("unexpected persistent id");
  if (pid->kind != Kind::Tuple || pid->items.size() < 5 || pid->items.size() > 6)
    fail("persistent id must be a ('storage', type, key, location, numel[, view]) tuple");
  const auto& e = pid->items;
  if ((e[0]->kind != Kind::Str && e[0]->kind != Kind::Bytes) || e[0]->s != "storage")
    fail("unsupported persistent id type");
  if (e[1]->kind != Kind::Global || e[1]->global != PyGlobal::StorageType)
    fail("persistent id storage type is not a torch storage class");
  if (e[2]->kind != Kind::Str && e[2]->kind != Kind::Bytes) fail("persistent id storage key must be a string");
  expect(e[4], Kind::Int, "persistent id numel");
  if (e[4]->i < 0) fail("negative storage size");
  PyValue* st = make(Kind::Storage);
  st->s = e[2]->s;
  st->dtype = e[1]->dtype;
  st->numel = e[4]->i;
  if (e.size() == 6 && e[5]->kind != Kind::None) {
    // Legacy view: (view_key, offset, size) in elements of the root storage.
    const PyValue* v = e[5];
    if (v->kind != Kind::Tuple || v->items.size() != 3 || v->items[1]->kind != Kind::Int ||
        v->items[2]->kind != Kind::Int)
      fail("bad storage view metadata");
    st->is_view = true;
    st->view_offset = v->items[1]->i;
    st->view_numel = v->items[2]->i;
    if (st->view_offset < 0 || st->view_numel < 0) fail("negative storage view bounds");
  }
  auto [it, fresh] = ctx_.storages.emplace(st->s, st->dtype);
  if (!fresh && it->second != st->dtype)
    fail("storage " + printable(st->s) + " is used with two different element types");
  return st;
}

// PROTO, FRAME and the stack/mark opcodes.
bool Machine::stack_op(uint8_t op) {
  switch (op) {
    case 0x80: {  // PROTO
      const uint64_t proto = uint_le(1);
      if (proto > 5) fail("unsupported protocol " + std::to_string(proto));
      return true;
    }
    case 0x95: uint_le(8); return true;  // FRAME: framing is irrelevant for an in-memory buffer
    case '(':
      if (marks_.size() >= kMaxMarks) fail("too many nested MARKs");
      marks_.push_back(stack_.size());
      return true;
    case '0':  // POP
      if (stack_.size() > fence()) stack_.pop_back(); else pop_mark();
      return true;
    case '1': pop_mark(); return true;  // POP_MARK
    case '2': push(top()); return true;  // DUP
    default:
      return false;
  }
}

// None, booleans, integers and floats.
bool Machine::scalar_op(uint8_t op) {
  switch (op) {
    case 'N': push(make(Kind::None)); return true;
    case 0x88: push(make_int(1, Kind::Bool)); return true;
    case 0x89: push(make_int(0, Kind::Bool)); return true;
    case 'J': push(make_int(static_cast<int32_t>(uint_le(4)))); return true;
    case 'K': push(make_int(static_cast<int64_t>(uint_le(1)))); return true;
    case 'M': push(make_int(static_cast<int64_t>(uint_le(2)))); return true;
    case 0x8a: push(make_long(take(uint_le(1)))); return true;  // LONG1
    case 0x8b: {                                            // LONG4
      const int32_t len = static_cast<int32_t>(uint_le(4));
      if (len < 0) fail("negative LONG4 length");
      push(make_long(take(static_cast<uint64_t>(len))));
      return true;
    }
    case 'I': {  // INT (text); "00"/"01" are protocol-0 booleans
      const std::string s = line();
      if (s == "00" || s == "01") push(make_int(s == "01", Kind::Bool));
      else push(make_int(parse_int(s, "INT")));
      return true;
    }
    case 'L': push(text_long(line())); return true;
    case 'G': {  // BINFLOAT, big-endian
      need(8);
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = bits << 8 | d_[pos_ + k];
      pos_ += 8;
      PyValue* v = make(Kind::Float);
      std::memcpy(&v->f, &bits, 8);
      push(v);
      return true;
    }
    default:
      return false;
  }
}

// Text and byte strings.
bool Machine::string_op(uint8_t op) {
  switch (op) {
    case 'V': push(make_str(raw_unicode_escape(line()), Kind::Str)); return true;  // UNICODE (protocol 0)
    case 'X': push(make_str(take(uint_le(4)), Kind::Str)); return true;     // BINUNICODE
    case 0x8c: push(make_str(take(uint_le(1)), Kind::Str)); return true;    // SHORT_BINUNICODE
    case 0x8d: push(make_str(take(uint_le(8)), Kind::Str)); return true;    // BINUNICODE8
    case 'T': {                                                         // BINSTRING (Python 2 str)
      const int32_t len = static_cast<int32_t>(uint_le(4));
      if (len < 0) fail("negative BINSTRING length");
      push(make_str(take(static_cast<uint64_t>(len)), Kind::Str));
      return true;
    }
    case 'U': push(make_str(take(uint_le(1)), Kind::Str)); return true;     // SHORT_BINSTRING
    case 'B': push(make_str(take(uint_le(4)), Kind::Bytes)); return true;   // BINBYTES
    case 'C': push(make_str(take(uint_le(1)), Kind::Bytes)); return true;   // SHORT_BINBYTES
    case 0x8e: push(make_str(take(uint_le(8)), Kind::Bytes)); return true;  // BINBYTES8
    default:
      return false;
  }
}

// Lists, tuples and dicts: building and filling them.
bool Machine::container_op(uint8_t op) {
  switch (op) {
    case ']': push(make(Kind::List)); return true;
    case ')': push(make(Kind::Tuple)); return true;
    case '}': push(make(Kind::Dict)); return true;
    case 'l': {  // LIST
      PyValue* v = make(Kind::List);
      v->items = pop_mark();
      push(v);
      return true;
    }
    case 't': {  // TUPLE
      PyValue* v = make(Kind::Tuple);
      v->items = pop_mark();
      push(v);
      return true;
    }
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      PyValue* v = make(Kind::Tuple);
      v->items.resize(op - 0x84);
      for (size_t k = v->items.size(); k-- > 0;) v->items[k] = pop();
      push(v);
      return true;
    }
    case 'd': {  // DICT
      std::vector<PyValue*> kv = pop_mark();
      if (kv.size() % 2 != 0) fail("odd number of items for DICT");
      PyValue* v = make(Kind::Dict);
      for (size_t k = 0; k < kv.size(); k += 2) set_item(v, kv[k], kv[k + 1]);
      push(v);
      return true;
    }
    case 'a': {  // APPEND
      PyValue* v = pop();
      PyValue* list = top();
      expect(list, Kind::List, "APPEND target");
      list->items.push_back(v);
      return true;
    }
    case 'e': {  // APPENDS
      std::vector<PyValue*> vs = pop_mark();
      PyValue* list = top();
      expect(list, Kind::List, "APPENDS target");
      list->items.insert(list->items.end(), vs.begin(), vs.end());
      return true;
    }
    case 's': {  // SETITEM
      PyValue* v = pop();
      PyValue* k = pop();
      set_item(top(), k, v);
      return true;
    }
    case 'u': {  // SETITEMS
      std::vector<PyValue*> kv = pop_mark();
      if (kv.size() % 2 != 0) fail("odd number of items for SETITEMS");
      PyValue* dict = top();
      for (size_t k = 0; k < kv.size(); k += 2) set_item(dict, kv[k], kv[k + 1]);
      return true;
    }
    default:
      return false;
  }
}

// The memo: PUT/GET and their binary forms.
bool Machine::memo_op(uint8_t op) {
  switch (op) {
    case 'q': memo_put(uint_le(1)); return true;  // BINPUT
    case 'r': memo_put(uint_le(4)); return true;  // LONG_BINPUT
    case 'p': {                             // PUT
      const int64_t idx = parse_int(line(), "PUT");
      if (idx < 0) fail("negative memo key");
      memo_put(static_cast<uint64_t>(idx));
      return true;
    }
    case 0x94: memo_put(memo_.size()); return true;  // MEMOIZE
    case 'h': memo_get(uint_le(1)); return true;      // BINGET
    case 'j': memo_get(uint_le(4)); return true;      // LONG_BINGET
    case 'g': {                                 // GET
      const int64_t idx = parse_int(line(), "GET");
      if (idx < 0) fail("negative memo key");
      memo_get(static_cast<uint64_t>(idx));
      return true;
    }
    default:
      return false;
  }
}

// Globals, calls (whitelisted only), BUILD and persistent ids.
bool Machine::object_op(uint8_t op) {
  switch (op) {
    case 'c': {  // GLOBAL
      const std::string module = line();
      const std::string name = line();
      push(global(module, name));
      return true;
    }
    case 0x93: {  // STACK_GLOBAL
      PyValue* name = pop();
      PyValue* module = pop();
      if (name->kind != Kind::Str || module->kind != Kind::Str) fail("STACK_GLOBAL needs two strings");
      push(global(module->s, name->s));
      return true;
    }
    case 'R':     // REDUCE
    case 0x81: {  // NEWOBJ (same restricted semantics: only whitelisted callables)
      PyValue* args = pop();
      PyValue* callable = pop();
      push(call(callable, args));
      return true;
    }
    case 'b': {  // BUILD: only the OrderedDict `_metadata` of a state_dict; its state is ignored
      pop();
      PyValue* obj = top();
      if (obj->kind != Kind::Dict) fail(std::string("BUILD on a ") + kind_name(obj->kind) + " is not supported");
      return true;
    }
    case 'Q': {  // BINPERSID
      PyValue* pid = pop();
      push(persistent_load(pid));
      return true;
    }
    case 'P': push(persistent_load(make_str(line(), Kind::Str))); return true;  // PERSID
    default:
      return false;
  }
}

// The opcode loop: each opcode group has its own helper, which returns
// false for an opcode outside its group.
PyValue* Machine::run() {
  for (;;) {
    need(1);
    const uint8_t op = d_[pos_++];
    if (op == '.') return pop();  // STOP
    if (stack_op(op) || scalar_op(op) || string_op(op) || container_op(op) || memo_op(op) || object_op(op))
      continue;
    static const char* hex = "0123456789abcdef";
    fail(std::string("unsupported opcode 0x") + hex[op >> 4] + hex[op & 15] + " at offset " +
         std::to_string(pos_ - 1));
  }
}

void put_u8(std::vector<uint8_t>& o, uint8_t v) { o.push_back(v); }
void put_le(std::vector<uint8_t>& o, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; ++k) o.push_back(uint8_t(v >> (8 * k)));
}
void put_str(std::vector<uint8_t>& o, const std::string& s) {
  if (s.size() < 256) {
    put_u8(o, 0x8c);  // SHORT_BINUNICODE
    put_u8(o, uint8_t(s.size()));
  } else if (s.size() <= 0xFFFFFFFFu) {
    put_u8(o, 'X');
    put_le(o, s.size(), 4);
  } else {
    throw Error("pickle: string too long");
  }
  o.insert(o.end(), s.begin(), s.end());
}
void put_int(std::vector<uint8_t>& o, int64_t v) {
  if (v >= 0 && v < 256) {
    put_u8(o, 'K');
    put_u8(o, uint8_t(v));
  } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
    put_u8(o, 'J');
    put_le(o, static_cast<uint64_t>(v), 4);
  } else {
    put_u8(o, 0x8a);  // LONG1, 8 bytes two's complement
    put_u8(o, 8);
    put_le(o, static_cast<uint64_t>(v), 8);
  }
}
void put_global(std::vector<uint8_t>& o, const std::string& module, const std::string& name) {
  put_u8(o, 'c');
  o.insert(o.end(), module.begin(), module.end());
  put_u8(o, '\n');
  o.insert(o.end(), name.begin(), name.end());
  put_u8(o, '\n');
}

const char* storage_class(DType t) {
  switch (t) {
    case DType::F32: return "FloatStorage";
    case DType::F16: return "HalfStorage";
    case DType::BF16: return "BFloat16Storage";
    case DType::F64: return "DoubleStorage";
    case DType::I64: return "LongStorage";
    case DType::I32: return "IntStorage";
    case DType::I16: return "ShortStorage";
    case DType::I8: return "CharStorage";
    case DType::U8: return "ByteStorage";
    case DType::Bool: return "BoolStorage";
  }
  return "ByteStorage";
}

}  // namespace

const char* kind_name(PyValue::Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::BigInt: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "value";
}

PyValue* unpickle(const uint8_t* data, size_t size, size_t& pos, PickleContext& ctx, bool allow_persistent) {
  Machine m(data, size, pos, ctx, allow_persistent);
  PyValue* v = m.run();
  pos = m.pos();
  return v;
}

std::vector<uint8_t> pickle_state_dict(const StateDict& sd) {
  std::vector<uint8_t> o = {0x80, 2};
  put_global(o, "collections", "OrderedDict");
  put_u8(o, ')');
  put_u8(o, 'R');
  put_u8(o, '(');  // one SETITEMS for all pairs; the unpickler has no batch limit
  for (size_t i = 0; i < sd.size(); ++i) {
    const TensorData& t = sd[i].second;
    put_str(o, sd[i].first);
    put_global(o, "torch._utils", "_rebuild_tensor_v2");
    put_u8(o, '(');
    // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
    put_u8(o, '(');
    put_str(o, "storage");
    put_global(o, "torch", storage_class(t.dtype));
    put_str(o, std::to_string(i));
    put_str(o, "cpu");
    put_int(o, t.numel());
    put_u8(o, 't');
    put_u8(o, 'Q');
    put_int(o, 0);  // storage offset
    put_u8(o, '(');
    for (int64_t d : t.shape) put_int(o, d);
    put_u8(o, 't');
    // C-order strides
    std::vector<int64_t> stride(t.shape.size(), 1);
    for (size_t k = t.shape.size(); k-- > 1;) stride[k - 1] = stride[k] * std::max<int64_t>(t.shape[k], 1);
    put_u8(o, '(');
    for (int64_t s : stride) put_int(o, s);
    put_u8(o, 't');
    put_u8(o, 0x89);  // requires_grad=False
    put_global(o, "collections", "OrderedDict");
    put_u8(o, ')');
    put_u8(o, 'R');  // backward_hooks
    put_u8(o, 't');
    put_u8(o, 'R');
  }
  put_u8(o, 'u');
  put_u8(o, '.');
  return o;
}

}  // namespace rsam::io::detail
