// The S3 backend: a repository under s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]
// (FORMAT.md §12.1), with the repository's locks as lock objects (§12.2).
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "format/backend.h"
#include "format/s3_client.h"

namespace gnomon {

class S3Backend final : public Backend {
 public:
  explicit S3Backend(std::unique_ptr<S3Client> client);
  ~S3Backend() override;

  const std::string& location() const override { return location_; }
  Status CheckLocation() override;
  Status CheckCreate() override;
  Status Create() override;
  void DiscardCreated(const std::vector<std::string>& written) override;
  Status Put(const std::string& name, std::span<const uint8_t> data) override;
  Status PutReplace(const std::string& name, std::span<const uint8_t> data) override;
  Status NewUpload(const std::string& name, std::unique_ptr<Upload>* out) override;
  Status Get(const std::string& name, std::string* out) override;
  Status Open(const std::string& name, std::unique_ptr<RandomAccessFile>* out) override;
  Status Head(const std::string& name, uint64_t* size) override;
  Status List(const std::string& dir, std::vector<std::string>* names) override;
  Status Delete(const std::string& name) override;
  Status ListTemporaries(std::vector<std::string>* names) override;
  Status Lock(const std::string& name, bool exclusive, const std::string& holder_info,
              std::unique_ptr<FileLock>* out, std::string* stale_holder) override;
  Status TryLock(const std::string& name, bool exclusive, std::unique_ptr<FileLock>* out) override;
  bool ReadOnly() override { return false; }
  bool ConcurrentWriters() const override { return true; }
  bool Remote() const override { return true; }

  // A lock object's create-once put (if_match "") or refresh (only if it
  // is still the version with ETag if_match: else Locked, the lock lost);
  // *etag: the new version's.
  Status PutLockObject(const std::string& name, std::span<const uint8_t> data,
                       const std::string& if_match, std::string* etag);

 private:
  class HeldLock;
  Status TakeLock(const std::string& name, bool exclusive, const std::string& holder_info,
                  std::unique_ptr<FileLock>* out, std::string* stale_holder);
  void Hold(HeldLock* l, bool held);
  // Refuses every write but to lock objects once a lock this process holds
  // is lost or has gone unrefreshed too long (FORMAT.md §8a).
  Status MayWrite(const std::string& name);
  Status CheckNotNested();
  std::string Key(const std::string& name) const;
  Status Answer(const std::string& what, const S3Response& r) const;
  Status PutObject(const std::string& name, std::span<const uint8_t> data, bool once);
  // Every key under prefix + "/" (the whole bucket for ""), less that part.
  Status ListKeys(const std::string& prefix, std::vector<std::string>* names);

  std::unique_ptr<S3Client> client_;
  std::string location_;
  std::mutex held_mu_;
  std::set<HeldLock*> held_;
};

// An S3 backend for `location` with credentials from the environment.
Status OpenS3Backend(const std::string& location, std::unique_ptr<Backend>* out);

}  // namespace gnomon
