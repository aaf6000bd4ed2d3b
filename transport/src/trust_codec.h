#pragma once
// msgpack helpers shared by the trust decoders (trust_keys.cpp, trust_cert.cpp). Every input is
// untrusted: unpacked with explicit limits inside a try block, every type and length checked.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <msgpack.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/result.h"
#include "weft/transport/trust.h"

namespace weft::transport::detail {

// A decoded msgpack tree; the objects reference `zone` and the input bytes.
struct Unpacked {
  msgpack::zone zone;
  msgpack::object obj;
};

inline bool reference_input_trust(msgpack::type::object_type /*type*/, std::size_t /*size*/, void* /*user*/) {
  return true;
}

// One msgpack value filling all of `bytes`, within the limits. `what` names it in errors.
inline Result<void> unpack_exact(std::span<const std::byte> bytes, const char* what, std::size_t max_array,
                                 std::size_t max_str, std::size_t max_bin, Unpacked& out,
                                 std::size_t max_depth = 3) {
  try {
    const msgpack::unpack_limit limits(/*array=*/max_array, /*map=*/0, /*str=*/max_str, /*bin=*/max_bin,
                                       /*ext=*/0, /*depth=*/max_depth);
    std::size_t off = 0;
    out.obj = msgpack::unpack(out.zone, reinterpret_cast<const char*>(bytes.data()), bytes.size(), off,
                              reference_input_trust, nullptr, limits);
    if (off != bytes.size()) return fail(std::string(what) + ": trailing bytes after the msgpack value");
  } catch (const std::exception& e) {
    return fail(std::string(what) + ": not valid msgpack within the limits (" + e.what() + ")");
  } catch (...) {
    return fail(std::string(what) + ": not valid msgpack");
  }
  return {};
}

// The array `o` with `min_size`..`max_size` elements whose first element is the format version.
inline Result<std::span<const msgpack::object>> versioned_array(const msgpack::object& o, const char* what,
                                                                std::uint32_t min_size,
                                                                std::uint32_t max_size,
                                                                std::uint64_t version) {
  if (o.type != msgpack::type::ARRAY) return fail(std::string(what) + ": not a msgpack array");
  const std::uint32_t n = o.via.array.size;
  if (n == 0) return fail(std::string(what) + ": empty array");
  const msgpack::object& v = o.via.array.ptr[0];
  if (v.type != msgpack::type::POSITIVE_INTEGER)
    return fail(std::string(what) + ": the format version is not a number");
  if (v.via.u64 != version) {
    return fail(std::string(what) + ": format version " + std::to_string(v.via.u64) +
                " is not supported (this weft reads " + std::to_string(version) + ")");
  }
  if (n < min_size || n > max_size) {
    return fail(std::string(what) + ": " + std::to_string(n) + " fields, want " + std::to_string(min_size) +
                (min_size == max_size ? "" : ".." + std::to_string(max_size)));
  }
  return std::span<const msgpack::object>(o.via.array.ptr, n);
}

template <std::size_t N>
Result<void> read_fixed_bin(const msgpack::object& o, const char* what, std::array<unsigned char, N>& out) {
  if (o.type != msgpack::type::BIN) return fail(std::string(what) + " is not bytes");
  if (o.via.bin.size != N) {
    return fail(std::string(what) + " is " + std::to_string(o.via.bin.size) + " bytes, want " +
                std::to_string(N));
  }
  std::memcpy(out.data(), o.via.bin.ptr, N);
  return {};
}

inline Result<void> read_bin(const msgpack::object& o, const char* what, std::size_t want,
                             std::vector<std::byte>& out) {
  if (o.type != msgpack::type::BIN) return fail(std::string(what) + " is not bytes");
  if (o.via.bin.size != want) {
    return fail(std::string(what) + " is " + std::to_string(o.via.bin.size) + " bytes, want " +
                std::to_string(want));
  }
  const auto* p = reinterpret_cast<const std::byte*>(o.via.bin.ptr);
  out.assign(p, p + want);
  return {};
}

inline Result<void> read_u64(const msgpack::object& o, const char* what, std::uint64_t& out) {
  if (o.type != msgpack::type::POSITIVE_INTEGER)
    return fail(std::string(what) + " is not a non-negative integer");
  out = o.via.u64;
  return {};
}

inline Result<void> read_i64(const msgpack::object& o, const char* what, std::int64_t& out) {
  if (o.type == msgpack::type::NEGATIVE_INTEGER) {
    out = o.via.i64;
    return {};
  }
  if (o.type != msgpack::type::POSITIVE_INTEGER) return fail(std::string(what) + " is not an integer");
  if (o.via.u64 > static_cast<std::uint64_t>(INT64_MAX)) return fail(std::string(what) + " is out of range");
  out = static_cast<std::int64_t>(o.via.u64);
  return {};
}

inline std::vector<std::byte> to_byte_vector(const msgpack::sbuffer& b) {
  const auto* p = reinterpret_cast<const std::byte*>(b.data());
  return {p, p + b.size()};
}

template <std::size_t N>
void pack_bin(msgpack::packer<msgpack::sbuffer>& pk, const std::array<unsigned char, N>& a) {
  pk.pack_bin(static_cast<std::uint32_t>(N));
  pk.pack_bin_body(reinterpret_cast<const char*>(a.data()), static_cast<std::uint32_t>(N));
}

inline void pack_bin(msgpack::packer<msgpack::sbuffer>& pk, std::span<const std::byte> b) {
  pk.pack_bin(static_cast<std::uint32_t>(b.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<std::uint32_t>(b.size()));
}

// What an operator signature covers: a context string naming the kind of document, then the
// exact body bytes.
std::vector<std::byte> signed_message(std::string_view context, std::span<const std::byte> body);

// The signature check shared by certificates and policies: `issuer` must be one of `trusted`
// and `sig` must verify with it over context || body.
enum class SignerCheck { kOk, kUnknownIssuer, kBadSignature };
SignerCheck check_operator_signature(std::string_view context, std::span<const std::byte> body,
                                     const std::array<unsigned char, 64>& sig,
                                     const std::array<unsigned char, 8>& issuer,
                                     std::span<const std::array<unsigned char, 32>> trusted);

// The message for a failed check (not kOk): "issuer ... is not a trusted operator key" or "the
// signature does not verify with issuer ...".
std::string signer_check_message(SignerCheck check, const std::array<unsigned char, 8>& issuer);

// The envelope [body:bin, sig:bin64] every signed document is stored and forwarded as.
struct Envelope {
  std::vector<std::byte> body;  // the exact signed bytes
  std::array<unsigned char, 64> sig{};
};
// Signs context || body with `key` and packs the envelope; `what` names the document in the
// error when the envelope exceeds max_bytes.
Result<std::vector<std::byte>> seal_envelope(std::string_view context, std::span<const std::byte> body,
                                             const OperatorKey& key, std::size_t max_bytes, const char* what);
// Splits an envelope (at most max_bytes) without checking the signature; the error names the
// problem (the caller prefixes "malformed <document>: ").
Result<Envelope> open_envelope(std::span<const std::byte> envelope, std::size_t max_bytes);

}  // namespace weft::transport::detail
