// A Backend that forwards to another but fails on command as an object
// store can: a write whose answer is lost after it was stored, a write that
// fails before it was, a HEAD that gets no answer. And it can claim that
// backups run side by side here (FORMAT.md §8), as on an object store.
#pragma once

#include <memory>
#include <string>

#include "format/backend.h"

namespace gnomon::test {

class FlakyBackend : public Backend {
 public:
  explicit FlakyBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  // A create-once put of a name containing this...
  std::string lose_answer;  // ...is stored, then fails (its answer lost)
  std::string fail_put;     // ...fails, storing nothing
  // ...is stored, then says Exists (a retry after a lost answer met the
  // first attempt's object, and could not tell it was its own).
  std::string stored_says_exists;
  std::string fail_head;    // A head of a name containing this fails.
  bool concurrent = false;  // ConcurrentWriters()

  const std::string& location() const override { return inner_->location(); }
  Status CheckLocation() override { return inner_->CheckLocation(); }
  Status CheckCreate() override { return inner_->CheckCreate(); }
  Status Create() override { return inner_->Create(); }
  void DiscardCreated(const std::vector<std::string>& w) override { inner_->DiscardCreated(w); }
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    if (Matches(name, fail_put)) return Status::IOError(Describe(name) + ": injected put fault");
    GNOMON_RETURN_IF_ERROR(inner_->Put(name, data));
    if (Matches(name, lose_answer))
      return Status::IOError(Describe(name) + ": injected lost answer");
    if (Matches(name, stored_says_exists))
      return Status::Exists(Describe(name) + ": already exists (injected)");
    return Status::OK();
  }
  Status PutReplace(const std::string& name, std::span<const uint8_t> data) override {
    return inner_->PutReplace(name, data);
  }
  Status NewUpload(const std::string& name, std::unique_ptr<Upload>* out) override {
    return inner_->NewUpload(name, out);
  }
  Status Get(const std::string& name, std::string* out) override { return inner_->Get(name, out); }
  Status Open(const std::string& name, std::unique_ptr<RandomAccessFile>* out) override {
    return inner_->Open(name, out);
  }
  Status Head(const std::string& name, uint64_t* size) override {
    if (Matches(name, fail_head)) return Status::IOError(Describe(name) + ": injected head fault");
    return inner_->Head(name, size);
  }
  Status List(const std::string& dir, std::vector<std::string>* names) override {
    return inner_->List(dir, names);
  }
  Status Delete(const std::string& name) override { return inner_->Delete(name); }
  Status ListTemporaries(std::vector<std::string>* names) override {
    return inner_->ListTemporaries(names);
  }
  Status Lock(const std::string& name, bool exclusive, const std::string& holder_info,
              std::unique_ptr<FileLock>* out, std::string* stale_holder) override {
    return inner_->Lock(name, exclusive, holder_info, out, stale_holder);
  }
  Status TryLock(const std::string& name, bool exclusive, std::unique_ptr<FileLock>* out) override {
    return inner_->TryLock(name, exclusive, out);
  }
  bool ReadOnly() override { return inner_->ReadOnly(); }
  bool ConcurrentWriters() const override { return concurrent; }

 private:
  static bool Matches(const std::string& name, const std::string& part) {
    return !part.empty() && name.find(part) != std::string::npos;
  }
  std::unique_ptr<Backend> inner_;
};

}  // namespace gnomon::test
