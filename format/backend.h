// Backend: where a repository's objects live (FORMAT.md §1, §12.1). Every
// repository operation goes through it with object-store semantics:
// create-once put, put-replace for the few mutable objects, whole or ranged
// get, head, list by prefix, delete, and the repository's locks. No rename,
// append or directory sync is visible above it.
//
// Names are relative to the repository ("config", "index/<id>",
// "packs/ab/<id>"): '/'-separated, never absolute, never "..". A local
// directory and an S3 bucket hold the same names.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/env.h"

namespace gnomon {

// A create-once object written in pieces (a pack): nothing is visible under
// its name until Commit returns OK, and Commit fails with Exists, storing
// nothing, if the name is taken.
class Upload {
 public:
  virtual ~Upload() = default;
  virtual Status Append(std::span<const uint8_t> data) = 0;
  virtual Status Commit() = 0;  // durable and visible when it returns OK
  virtual void Abort() = 0;     // drops what was written; idempotent
  virtual uint64_t Size() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Where the repository is, for messages ("/srv/repo", "s3:http://h/b/p").
  virtual const std::string& location() const = 0;
  // location/name: how a message names an object.
  std::string Describe(const std::string& name) const { return location() + "/" + name; }

  // OK if anything is at the location at all (before asking for config);
  // NotFound if nothing is; any other error (a wrong key, no answer) as is.
  virtual Status CheckLocation() = 0;
  // Whether a new repository could be created here (touches nothing):
  // an empty location, or what an interrupted init left.
  virtual Status CheckCreate() = 0;
  // Prepares an empty location (local: the directory layout, clearing what
  // an interrupted init left); DiscardCreated undoes it after a failed
  // init, deleting of the objects only those this init wrote.
  virtual Status Create() = 0;
  virtual void DiscardCreated(const std::vector<std::string>& written) = 0;

  // Create-once: Exists, changing nothing, if `name` exists.
  virtual Status Put(const std::string& name, std::span<const uint8_t> data) = 0;
  // Replaces `name` atomically (a reader sees the old or the new object):
  // only for objects meant to change (journals, lock objects).
  virtual Status PutReplace(const std::string& name, std::span<const uint8_t> data) = 0;
  virtual Status NewUpload(const std::string& name, std::unique_ptr<Upload>* out) = 0;

  // NotFound if absent.
  virtual Status Get(const std::string& name, std::string* out) = 0;
  // For ranged reads; the handle's path() is Describe(name).
  virtual Status Open(const std::string& name, std::unique_ptr<RandomAccessFile>* out) = 0;
  virtual Status Head(const std::string& name, uint64_t* size) = 0;
  bool Exists(const std::string& name) {
    uint64_t size;
    return Head(name, &size).ok();
  }
  // Every object whose name starts with dir + "/", as the rest of its name
  // ("ab/<id>" under "packs"), in no particular order. A dir with nothing
  // under it is empty, not an error.
  virtual Status List(const std::string& dir, std::vector<std::string>* names) = 0;
  // NotFound if absent. Durable when it returns OK for backups/, keys/ and
  // index/ objects; another deletion may come back after a crash, leaving
  // only what the clean-up of FORMAT.md §9 removes.
  virtual Status Delete(const std::string& name) = 0;

  // What a write the backend makes in steps left behind when its process
  // died (local: NAME.tmp-<random> files), as names Delete takes.
  virtual Status ListTemporaries(std::vector<std::string>* names) = 0;

  // The repository's locks (FORMAT.md §8): `name` is "lock" or "gc/...".
  // Lock: the repository lock, whose exclusive holder leaves holder_info
  // for whoever comes next (stale_holder: what a dead holder left). TryLock:
  // a plain lock. Both never block: Locked on contention. Released when
  // *out is destroyed, or when the process dies.
  virtual Status Lock(const std::string& name, bool exclusive, const std::string& holder_info,
                      std::unique_ptr<FileLock>* out, std::string* stale_holder) = 0;
  virtual Status TryLock(const std::string& name, bool exclusive,
                         std::unique_ptr<FileLock>* out) = 0;
  // Whether nothing here can be created, changed or deleted by anyone
  // (a read-only mount): then no lock is needed.
  virtual bool ReadOnly() = 0;
  // Whether backups may run side by side here (FORMAT.md §8): on an object
  // store, where hosts share a bucket and nothing is written half-way;
  // not in a local directory, whose temporaries name no writer.
  virtual bool ConcurrentWriters() const = 0;
  // Whether reads cost a network round trip (then metadata is cached).
  virtual bool Remote() const { return false; }
  // From now on, read every object from the store itself, not a cache
  // (verify checks what is stored).
  virtual void BypassCache() {}
};

// A repository in a local directory, through env (FORMAT.md §1b).
std::unique_ptr<Backend> NewLocalBackend(Env* env, const std::string& path);
// A remote backend wrapped in the metadata cache of FORMAT.md §12.7, under
// DefaultCacheRoot()/<repo id>; others, or no usable cache root, as they are.
std::unique_ptr<Backend> WithMetadataCache(std::unique_ptr<Backend> inner,
                                           const std::string& repo_id);
// $GNOMON_CACHE_DIR ("none": no cache), else /var/cache/gnomon for root,
// else $XDG_CACHE_HOME/gnomon or ~/.cache/gnomon.
std::string DefaultCacheRoot();

// The backend for a location the user gave: "s3:http[s]://HOST[:PORT]/
// BUCKET[/PREFIX]" (credentials from the environment), else a local path.
Status OpenBackend(Env* env, const std::string& location, std::unique_ptr<Backend>* out);
bool IsS3Location(const std::string& location);

}  // namespace gnomon
