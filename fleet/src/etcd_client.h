// EtcdClient: the part of etcd's v3 API a fleet needs (keys, guarded transactions, leases,
// watches), over the project's own gRPC stack and etcd's wire format (proto/etcd/).
//
// It holds a channel to every endpoint and fails over: a call that finds its member down,
// or without a leader, moves on to the next member until its deadline. Watches resume after
// a disconnect from the revision after the last one they delivered, so a watcher misses no
// change; when that revision was compacted away, the watcher re-lists and says where to
// resume. TLS and etcd's own authentication are not supported (plain loopback or a trusted
// network; docs/FLEET.md).
#ifndef POLYPLUG_FLEET_SRC_ETCD_CLIENT_H_
#define POLYPLUG_FLEET_SRC_ETCD_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace polyplug::fleet {

struct EtcdOptions {
  // "HOST:PORT" or "http://HOST:PORT", at least one.
  std::vector<std::string> endpoints;
  // The whole of one call, failovers included.
  absl::Duration call_timeout = absl::Seconds(5);
  // One attempt on one member, before the next member is tried.
  absl::Duration attempt_timeout = absl::Seconds(1);
  // Start on a random member, so that many clients spread over the cluster; false: on the
  // first endpoint (tests that kill the member in use).
  bool random_first_member = true;
};

// One key as etcd stores it.
struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

// The keys of a read, and the store's revision it was read at.
struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;
};

// A guarded write: whether the guard held (and the write happened), and the store's
// revision after the transaction.
struct TxnResult {
  bool succeeded = false;
  int64_t revision = 0;
};

// One change a watch saw. For a delete, kv.value is empty and kv.mod_revision is the
// deletion's revision.
struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;
};

// What a watch calls, all on the watch's own thread, one call at a time.
struct WatchHandler {
  // The changes of one or more revisions, in revision order; `revision` is the last of
  // them, and the watch resumes after it.
  std::function<void(const std::vector<WatchEvent>& events, int64_t revision)> on_events;
  // The revision to resume from was compacted away: changes were missed. Re-read the state
  // and return the revision it was read at; the watch resumes after it.
  std::function<int64_t()> on_compacted;
  // Optional: the stream to a member broke (the watch reconnects by itself). For logs.
  std::function<void(const absl::Status&)> on_disconnected;
};

// A watch on a key prefix, running until it is destroyed.
class EtcdWatch {
 public:
  virtual ~EtcdWatch() = default;  // stops the watch and joins its thread
};

// A lease kept alive from a thread of its own until it is destroyed (then revoked, so that
// its keys go at once rather than at expiry).
class EtcdLease {
 public:
  virtual ~EtcdLease() = default;
  virtual int64_t id() const = 0;
  // False once the lease is known to be gone (expired while etcd was unreachable): its
  // keys are deleted, and a new lease must be granted.
  virtual bool alive() const = 0;
};

// Thread-safe.
class EtcdClient {
 public:
  // Makes the channels; INVALID_ARGUMENT names a malformed endpoint. Contacts no member:
  // a call does, and fails with UNAVAILABLE naming every endpoint when none answers.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(EtcdOptions options);
  ~EtcdClient();

  // "a:1,b:2": the endpoints, for messages.
  const std::string& endpoints_label() const;

  // Calls in progress and later ones end soon with CANCELLED (at most one attempt's
  // timeout later), so that a thread blocked in one can be joined. Watches and leases
  // already made are unaffected. Irreversible.
  void Shutdown();

  // OK once a member answers (Maintenance.Status) and the cluster has a leader.
  absl::Status CheckReachable();

  // One key (no key: empty kvs), or every key below a prefix, read at the newest
  // revision with a quorum (linearizable).
  absl::StatusOr<RangeResult> Get(absl::string_view key);
  // `serializable`: the member's own copy, without a quorum round (may be a little stale;
  // cheaper, and served without a leader).
  absl::StatusOr<RangeResult> GetPrefix(absl::string_view prefix, bool serializable = false);
  // Returns the revision of the write. `lease` 0: the key outlives any lease.
  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value, int64_t lease = 0);
  // Writes every (key, value) in one transaction: one revision, one round of consensus.
  // Returns its revision.
  absl::StatusOr<int64_t> PutAll(const std::vector<std::pair<std::string, std::string>>& kvs,
                                 int64_t lease = 0);
  // Writes only if the key's mod_revision is `expected_mod_revision` (0: only if the key
  // does not exist). Two writers that read the same revision: at most one succeeds.
  absl::StatusOr<TxnResult> PutIfModRevision(absl::string_view key, absl::string_view value,
                                             int64_t expected_mod_revision, int64_t lease = 0);
  // Deletes only if the key's mod_revision is `expected_mod_revision`.
  absl::StatusOr<TxnResult> DeleteIfModRevision(absl::string_view key,
                                                int64_t expected_mod_revision);
  // Returns how many keys were deleted.
  absl::StatusOr<int64_t> Delete(absl::string_view key);

  // Grants a lease of `ttl` (whole seconds, at least 1) and keeps it alive every ttl/3.
  // `on_lost` (optional) runs once, on the lease's thread, when the lease is found gone.
  absl::StatusOr<std::unique_ptr<EtcdLease>> GrantLease(absl::Duration ttl,
                                                        std::function<void()> on_lost = {});

  // Watches every key below `prefix` from `start_revision` (inclusive; 0: from now) until
  // the returned watch is destroyed. Returns at once; the watch connects on its thread.
  std::unique_ptr<EtcdWatch> WatchPrefix(std::string prefix, int64_t start_revision,
                                         WatchHandler handler);

  // The end of the range of keys below `prefix`: the prefix with its last byte incremented.
  static std::string PrefixEnd(absl::string_view prefix);

  class Impl;  // etcd_client.cc

 private:
  explicit EtcdClient(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;  // shared with watches and leases, which may outlive *this
};

}  // namespace polyplug::fleet

#endif  // POLYPLUG_FLEET_SRC_ETCD_CLIENT_H_
