#include "vss/volume_writer.h"

namespace gnomon::vss {

Guid VolumeWriter::ClassId() {
  Guid g;
  Guid::Parse("b7c3e0a2-5d14-4f8e-a9c1-2f6d8e4b3a70", &g);
  return g;
}

VolumeWriter::VolumeWriter(std::vector<std::string> volumes) : volumes_(std::move(volumes)) {
  Initialize(ClassId(), "Volume Image Writer", UsageType::kUserData, SourceType::kOther,
             ApplicationLevel::kSystem);
}

bool VolumeWriter::OnIdentify(WriterMetadata* md) {
  md->backup_schema = schema::kCopy | schema::kTimestamped;
  for (const auto& v : volumes_) {
    ComponentInfo c;
    c.type = ComponentType::kFileGroup;
    c.logical_path = kLogicalPath;
    c.name = v;
    c.caption = "Block image of " + v;
    FileSpec f;
    f.path = v;
    f.spec = "";  // the volume itself, not files inside it
    c.files.push_back(f);
    md->components.push_back(c);
  }
  return true;
}

}  // namespace gnomon::vss
