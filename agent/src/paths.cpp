#include "paths.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace weft::agent {

namespace {

std::string err(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string mode_string(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", static_cast<unsigned>(m & 07777));
  return b;
}

// Creates every missing component of `dir`; the last one 0700.
Result<void> make_dirs(const std::string& dir) {
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return fail(err("cannot create " + part));
  }
  return {};
}

Result<void> check_own_dir(const std::string& dir, bool tighten) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return fail(err(dir));
  if (S_ISLNK(st.st_mode)) return fail(dir + " is a symlink; give the real directory");
  if (!S_ISDIR(st.st_mode)) return fail(dir + " is not a directory");
  if (st.st_uid != ::geteuid()) return fail(dir + " belongs to uid " + std::to_string(st.st_uid) + ", not to us");
  if ((st.st_mode & 077) != 0) {
    if (!tighten) return fail(dir + " must be owner-only (mode 0700), is " + mode_string(st.st_mode));
    if (::chmod(dir.c_str(), 0700) != 0) return fail(err("chmod 0700 " + dir));
  }
  return {};
}

std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// True if a process accepts connections on the unix socket at `path`.
bool socket_is_live(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  const bool live = ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return live;
}

}  // namespace

Result<void> prepare_data_dir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return fail(err("--data-dir " + dir));
    if (auto r = make_dirs(dir); !r) return r;
  }
  if (auto r = check_own_dir(dir, /*tighten=*/true); !r) return fail("--data-dir: " + r.error().message);
  return {};
}

Result<int> lock_data_dir(const std::string& dir) {
  const std::string path = dir + "/lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return fail(err("cannot open " + path));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return fail("another agent is running with --data-dir " + dir);
  }
  return fd;
}

Result<void> prepare_rpc_path(const std::string& path) {
  const std::string dir = parent_of(path);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return fail(err("--rpc directory " + dir));
    if (auto r = make_dirs(dir); !r) return fail("--rpc: " + r.error().message);
  }
  if (auto r = check_own_dir(dir, /*tighten=*/false); !r) return fail("--rpc: " + r.error().message);
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) return fail("--rpc: " + path + " is a symlink; refusing it");
    if (st.st_uid != ::geteuid()) return fail("--rpc: " + path + " belongs to uid " + std::to_string(st.st_uid));
    if (!S_ISSOCK(st.st_mode)) return fail("--rpc: " + path + " exists and is not a socket");
    if (socket_is_live(path)) return fail("--rpc: another agent listens at " + path);
    // A socket of ours left by an agent that died.
    if (::unlink(path.c_str()) != 0) return fail(err("--rpc: cannot remove stale " + path));
  } else if (errno != ENOENT) {
    return fail(err("--rpc " + path));
  }
  return {};
}

}  // namespace weft::agent
