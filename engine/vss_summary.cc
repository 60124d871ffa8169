#include "engine/vss_summary.h"

namespace gnomon {

namespace {

using nlohmann::json;

// Field readers: an absent field keeps its default; a field of the wrong
// type is damage, named by its path.
class Reader {
 public:
  explicit Reader(std::string where) : where_(std::move(where)) {}
  const Status& status() const { return st_; }

  void Str(const json& o, const char* key, std::string* out) {
    if (const json* v = Field(o, key); v && !Check(v->is_string(), key, "a string"))
      *out = v->get<std::string>();
  }
  void Bool(const json& o, const char* key, bool* out) {
    if (const json* v = Field(o, key); v && !Check(v->is_boolean(), key, "true or false"))
      *out = v->get<bool>();
  }
  void Num(const json& o, const char* key, double* out) {
    if (const json* v = Field(o, key); v && !Check(v->is_number(), key, "a number"))
      *out = v->get<double>();
  }
  void Uint(const json& o, const char* key, uint64_t* out) {
    if (const json* v = Field(o, key); v && !Check(v->is_number_unsigned(), key, "a count"))
      *out = v->get<uint64_t>();
  }
  // The objects of array o[key], each checked to be an object.
  std::vector<const json*> Objects(const json& o, const char* key) {
    std::vector<const json*> out;
    const json* v = Field(o, key);
    if (!v || Check(v->is_array(), key, "an array")) return out;
    for (const auto& e : *v)
      if (!Check(e.is_object(), key, "an array of objects")) out.push_back(&e);
    return out;
  }
  const json* Object(const json& o, const char* key) {
    const json* v = Field(o, key);
    if (!v || Check(v->is_object(), key, "an object")) return nullptr;
    return v;
  }

 private:
  const json* Field(const json& o, const char* key) {
    if (!st_.ok() || !o.is_object() || !o.contains(key)) return nullptr;
    return &o[key];
  }
  // True (and the status set) if the shape is wrong.
  bool Check(bool ok, const char* key, const char* want) {
    if (!ok && st_.ok())
      st_ = Status::Corruption(where_ + ": field '" + key + "' is not " + want +
                               " (the record's VSS documents are damaged)");
    return !ok;
  }
  std::string where_;
  Status st_;
};

}  // namespace

Status SummarizeVss(const json& extra, VssSummary* out) {
  *out = VssSummary();
  Reader r("extra.vss");
  if (!extra.is_object() || !extra.contains("vss")) return Status::OK();
  const json* vss = r.Object(extra, "vss");
  if (!vss) return r.status();
  out->present = true;
  r.Bool(*vss, "snapshot_skipped", &out->snapshot_skipped);
  r.Num(*vss, "frozen_ms", &out->frozen_ms);
  for (const json* s : r.Objects(*vss, "sources")) {
    VssSummary::Source src;
    r.Str(*s, "volume", &src.volume);
    r.Str(*s, "provider", &src.provider);
    r.Str(*s, "device", &src.device);
    out->sources.push_back(src);
  }
  if (const json* bcd = r.Object(*vss, "bcd")) {
    r.Str(*bcd, "snapshot_set_id", &out->snapshot_set_id);
    r.Str(*bcd, "schema", &out->schema);
    r.Str(*bcd, "backup_type", &out->backup_type);
    r.Bool(*bcd, "select_components", &out->select_components);
    for (const json* c : r.Objects(*bcd, "components")) {
      VssSummary::Component k;
      r.Str(*c, "writer_name", &k.writer_name);
      r.Str(*c, "logical_path", &k.logical_path);
      r.Str(*c, "name", &k.name);
      r.Str(*c, "backup_stamp", &k.backup_stamp);
      r.Str(*c, "previous_backup_stamp", &k.previous_backup_stamp);
      r.Str(*c, "backup_metadata", &k.backup_metadata);
      r.Str(*c, "backup_options", &k.backup_options);
      out->components.push_back(k);
    }
    for (const json* c : r.Objects(*bcd, "implicit_components")) {
      VssSummary::ImplicitComponent k;
      r.Str(*c, "writer_name", &k.writer_name);
      r.Str(*c, "logical_path", &k.logical_path);
      r.Str(*c, "name", &k.name);
      r.Str(*c, "included_with", &k.included_with);
      out->implicit_components.push_back(k);
    }
  }
  for (const json* w : r.Objects(*vss, "writers")) {
    VssSummary::Writer k;
    r.Str(*w, "name", &k.name);
    r.Str(*w, "class_id", &k.class_id);
    k.components = r.Objects(*w, "components").size();
    out->writers.push_back(k);
  }
  for (const json* w : r.Objects(*vss, "writer_status")) {
    VssSummary::WriterState k;
    r.Str(*w, "name", &k.name);
    r.Str(*w, "state_name", &k.state_name);
    r.Uint(*w, "failure", &k.failure);
    r.Str(*w, "failure_name", &k.failure_name);
    r.Str(*w, "message", &k.message);
    out->writer_status.push_back(k);
  }
  return r.status();
}

}  // namespace gnomon
