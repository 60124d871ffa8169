#include "engine/pack_sink.h"

namespace gnomon {

Status PackSink::Append(const Digest& d, Codec codec, std::span<const uint8_t> stored,
                        uint32_t raw_len, uint8_t patch_depth, uint64_t raw_check) {
  if (!pack_) GNOMON_RETURN_IF_ERROR(repo_->NewPackWriter(&pack_));
  GNOMON_RETURN_IF_ERROR(pack_->Add(d, codec, stored, raw_len, patch_depth, raw_check));
  if (pack_->size() >= repo_->config().pack_size) return Seal();
  return Status::OK();
}

Status PackSink::Seal() {
  if (!pack_) return Status::OK();
  std::unique_ptr<PackWriter> p = std::move(pack_);
  if (p->count() == 0) {
    p->Abandon();
    return Status::OK();
  }
  PackWriter* raw = p.get();
  sealing_.push_back(
      {std::move(p), std::async(std::launch::async, [raw] { return raw->Finish(); })});
  return WaitSealed(kMaxSealing);
}

Status PackSink::WaitSealed(size_t keep) {
  Status first;
  while (sealing_.size() > keep) {
    Sealing s = std::move(sealing_.front());
    sealing_.pop_front();
    Status st = s.done.get();
    if (st.ok()) {
      finished_.push_back(PackSummary{s.pack->id(), s.pack->entries()});
    } else {
      // It may exist all the same (renamed into place, then its directory
      // sync failed): only the journal names it.
      seal_failed_ = true;
      if (first.ok()) first = st;
    }
  }
  return first;
}

Status PackSink::Flush() {
  Status s = Seal();
  Status w = WaitSealed(0);
  return s.ok() ? w : s;
}

bool PackSink::Discard() {
  if (pack_) pack_->Abandon();
  pack_.reset();
  WaitSealed(0);
  bool all = true;
  for (const auto& p : finished_) {
    Status s = repo_->backend()->Delete(repo_->PackName(p.id));
    all = all && (s.ok() || s.IsNotFound());
  }
  finished_.clear();
  return all && !seal_failed_;
}

}  // namespace gnomon
