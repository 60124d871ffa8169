#include "vss/volume_stamp.h"

#include "base/json.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>
#include <nlohmann/json.hpp>

namespace gnomon::vss {

using nlohmann::json;

std::string VolumeStamp::Encode() const {
  return json{{"stamp", kStampSchema},
              {"volume_key", volume_key},
              {"size", size},
              {"tracker", tracker},
              {"series", series},
              {"sequence", sequence},
              {"base_snapshot", base_snapshot},
              {"base_device", base_device},
              {"generation", generation},
              {"clean", clean}}
      .dump();
}

Status VolumeStamp::Decode(const std::string& text, VolumeStamp* out) {
  json j;
  std::string err;
  if (!ParseJsonBounded(text, &j, &err, 1u << 20) || !j.is_object())
    return Status::Corruption("the previous backup stamp is not valid JSON (damaged or truncated)");
  std::string schema =
      j.contains("stamp") && j["stamp"].is_string() ? j["stamp"].get<std::string>() : "";
  if (schema != kStampSchema && schema != kStampSchemaV1) {
    if (schema.rfind("gnomon.volume-stamp/", 0) == 0)
      return Status::Unsupported("the previous backup stamp has version " + schema.substr(20) +
                                 ", newer than this gnomon understands");
    return Status::InvalidArgument("the previous backup stamp is not a gnomon volume stamp");
  }
  try {
    VolumeStamp s;
    s.volume_key = j.at("volume_key");
    s.size = j.at("size");
    if (!ParseTracker(j.at("tracker").get<std::string>(), &s.tracker))
      return Status::Unsupported(
          "the previous backup stamp names a change tracker this gnomon does not know (" +
          j["tracker"].get<std::string>() + ")");
    s.series = j.at("series");
    s.sequence = j.at("sequence");
    s.base_snapshot = j.at("base_snapshot");
    s.base_device = j.at("base_device");
    s.generation = j.at("generation");
    s.clean = j.at("clean");
    *out = std::move(s);
    return Status::OK();
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("the previous backup stamp is incomplete (") + e.what() +
                              ")");
  }
}

std::string VolumeKey(const VolumeIdentity& v) {
  if (v.is_loop) {
    char buf[PATH_MAX];
    std::string f = ::realpath(v.loop.backing_file.c_str(), buf) ? buf : v.loop.backing_file;
    return "file:" + f + (v.loop.offset ? "@" + std::to_string(v.loop.offset) : "");
  }
  if (!v.is_block) return "file:" + v.real_path;
  return "dev:" + v.real_path;
}

std::string FileGeneration(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec);
}

}  // namespace gnomon::vss
