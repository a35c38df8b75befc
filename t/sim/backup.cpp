#include "backup.h"

#include "qmp_error.h"
#include "schema.h"
#include "util/error.h"
#include "util/uuid.h"
#include "vma/image_source.h"
#include "vma/throttle.h"
#include "vma/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <sstream>

namespace pve_sim {

using engine::Json;

// One backup job; the job thread and query-backup share it.
struct Job {
    std::string uuid;
    std::string backup_file;
    int64_t start_time = 0;
    uint64_t total = 0;
    uint64_t dirty = 0;
    uint64_t reused = 0;
    std::atomic<bool> cancel{false};
    std::atomic<bool> finishing{false};
    std::atomic<uint64_t> transferred{0};
    std::atomic<uint64_t> zero_bytes{0};

    mutable std::mutex lock; // guards the fields below
    std::string status = "active";
    std::string errmsg;
    int64_t end_time = 0;

    std::thread thread;

    void end(const std::string &error)
    {
        std::lock_guard guard(lock);
        if (status != "active")
            return;
        status = error.empty() ? "done" : "error";
        errmsg = error;
        end_time = std::time(nullptr);
    }
};

namespace {

const char *kTarget = "Proxmox";

struct Device {
    std::string name;
    std::string path;
    uint64_t size;
};

struct Canceled {};

// Called after every copied batch: honours cancel, the speed limit and the
// fault options.
class Pacer {
  public:
    Pacer(Job &job, const Options &options, int64_t speed) : job_(job), options_(options)
    {
        if (speed > 0)
            throttle_.set_rate(static_cast<uint64_t>(speed));
    }

    void step(uint64_t transferred_now)
    {
        if (job_.cancel)
            throw Canceled();
        throttle_.consume(transferred_now - accounted_);
        accounted_ = transferred_now;
        if (options_.backup_delay_ms > 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(options_.backup_delay_ms));
        if (options_.backup_error_at >= 0 && transferred_now >= static_cast<uint64_t>(options_.backup_error_at))
            throw engine::Error("job failed with err -5 - " + engine::errno_text(EIO));
        if (job_.cancel)
            throw Canceled();
    }

  private:
    Job &job_;
    const Options &options_;
    engine::vma::Throttle throttle_;
    uint64_t accounted_ = 0;
};

// pve-qemu's jobs run one device after another, but copy-before-write also
// emits clusters of devices not yet running, so real archives interleave
// devices and leave clusters out of order. With `interleave`, every device
// advances one batch per round and each batch is written backwards.
void copy_devices(engine::vma::Writer &writer, const std::vector<Device> &devices,
                  const std::vector<engine::vma::DeviceId> &ids, bool interleave, const std::function<void()> &step)
{
    if (!interleave) {
        for (size_t i = 0; i < devices.size(); i++) {
            engine::vma::ImageSource source(devices[i].path);
            engine::vma::write_image(writer, ids[i], source, step);
        }
        return;
    }
    constexpr size_t batch = 64;
    std::vector<std::unique_ptr<engine::vma::ImageSource>> sources;
    std::vector<uint64_t> next(devices.size(), 0);
    for (const Device &device : devices)
        sources.push_back(std::make_unique<engine::vma::ImageSource>(device.path));
    auto buffer = std::make_unique<uint8_t[]>(batch * engine::vma::kClusterSize);
    bool hole[batch];
    for (bool copied = true; copied;) {
        copied = false;
        for (size_t i = 0; i < devices.size(); i++) {
            uint64_t clusters = engine::vma::clusters_for(writer.device_size(ids[i]));
            if (next[i] >= clusters)
                continue;
            size_t count = static_cast<size_t>(std::min<uint64_t>(batch, clusters - next[i]));
            sources[i]->read_clusters(next[i], count, buffer.get(), hole);
            for (size_t j = count; j-- > 0;) {
                writer.write_cluster(ids[i], static_cast<uint32_t>(next[i] + j),
                                     hole[j] ? nullptr : buffer.get() + j * engine::vma::kClusterSize);
            }
            next[i] += count;
            copied = true;
            step();
        }
    }
}

void run_vma(std::shared_ptr<Job> job, std::unique_ptr<engine::vma::Writer> writer, engine::Fd output,
             std::vector<Device> devices, std::vector<engine::vma::DeviceId> ids, const Options &options,
             int64_t speed)
{
    std::string error;
    try {
        Pacer pacer(*job, options, speed);
        copy_devices(*writer, devices, ids, options.interleave, [&] {
            job->transferred = writer->total_transferred();
            job->zero_bytes = writer->total_zero_bytes();
            pacer.step(writer->total_transferred());
        });
        job->finishing = true;
        writer->finish();
        output.close_checked("close backup file");
    } catch (const Canceled &) {
        error = "backup canceled";
    } catch (const std::exception &e) {
        error = e.what();
    }
    job->transferred = writer->total_transferred();
    job->zero_bytes = writer->total_zero_bytes();
    writer.reset();
    output = engine::Fd();
    job->finishing = false;
    job->end(error);
}

void run_pbs(std::shared_ptr<Job> job, const Options &options, int64_t speed)
{
    std::string error;
    try {
        Pacer pacer(*job, options, speed);
        constexpr uint64_t chunk = 4 << 20;
        while (job->transferred < job->dirty) {
            uint64_t next = std::min<uint64_t>(job->transferred + chunk, job->dirty);
            job->transferred = next;
            pacer.step(next);
        }
        job->finishing = true;
    } catch (const Canceled &) {
        error = "backup canceled";
    } catch (const std::exception &e) {
        error = e.what();
    }
    job->finishing = false;
    job->end(error);
}

std::vector<std::string> split_devlist(const std::string &devlist)
{
    std::vector<std::string> names;
    std::string name;
    for (char c : devlist + ",") {
        if (c == ',' || c == ';' || c == ':') {
            if (!name.empty())
                names.push_back(name);
            name.clear();
        } else {
            name += c;
        }
    }
    return names;
}

std::string read_config(const std::string &path)
{
    std::ifstream file(path, std::ios::binary);
    std::ostringstream text;
    if (!file || !(text << file.rdbuf()))
        throw QmpError("unable to read file '" + path + "'");
    return text.str();
}

std::string basename_of(const std::string &path)
{
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

} // namespace

Backups::~Backups()
{
    if (job_ && job_->thread.joinable()) {
        job_->cancel = true;
        job_->thread.join();
    }
}

bool Backups::job_active() const
{
    if (!job_)
        return false;
    std::lock_guard guard(job_->lock);
    return job_->status == "active";
}

Json Backups::backup(Vm &vm, const Json &arguments)
{
    check_arguments(arguments, {
                                   {"backup-file", Type::string, true},
                                   {"password", Type::string},
                                   {"keyfile", Type::string},
                                   {"key-password", Type::string},
                                   {"master-keyfile", Type::string},
                                   {"fingerprint", Type::string},
                                   {"backup-ns", Type::string},
                                   {"backup-id", Type::string},
                                   {"backup-time", Type::integer},
                                   {"use-dirty-bitmap", Type::boolean},
                                   {"compress", Type::boolean},
                                   {"encrypt", Type::boolean},
                                   {"format", Type::string},
                                   {"config-file", Type::string},
                                   {"firewall-file", Type::string},
                                   {"devlist", Type::string},
                                   {"speed", Type::integer},
                                   {"max-workers", Type::integer},
                                   {"fleecing", Type::boolean},
                               });
    std::string format = string_arg(arguments, "format", "vma");
    if (format != "vma" && format != "pbs")
        throw QmpError("Parameter 'format' does not accept value '" + format + "'");
    if (job_active() || !access_target_.empty())
        throw QmpError(std::string("previous backup for target '") + kTarget + "' not finished");
    if (job_ && job_->thread.joinable())
        job_->thread.join();
    bitmaps_ = Json::array(); // every backup starts by clearing the bitmap info

    std::vector<Device> devices;
    if (arguments.has("devlist")) {
        for (const std::string &name : split_devlist(string_arg(arguments, "devlist"))) {
            const Drive *drive = vm.find_device(name);
            if (!drive)
                throw QmpError("Device '" + name + "' not found");
            devices.push_back({name, drive->path, drive->size});
        }
    } else {
        for (const Drive &drive : vm.drives) {
            if (drive.read_only || (drive.id.empty() && drive.qdev.empty()))
                continue; // not a BlockBackend
            devices.push_back({drive.id.empty() ? drive.node_name : drive.id, drive.path, drive.size});
        }
    }
    if (devices.empty())
        throw QmpError("empty device list");

    if (boolean_arg(arguments, "fleecing")) {
        for (const Device &device : devices) {
            if (device.name.starts_with("drive-efidisk") || device.name.starts_with("drive-tpmstate"))
                continue;
            std::string fleecing_name = device.name + "-fleecing";
            const Drive *fleecing = vm.find_device(fleecing_name);
            if (!fleecing)
                throw QmpError("Device '" + fleecing_name + "' not found");
            if (fleecing->size / 512 != device.size / 512) {
                throw QmpError("Size mismatch for '" + fleecing_name + "' - sector count " +
                               std::to_string(fleecing->size / 512) + " != " + std::to_string(device.size / 512));
            }
        }
    }

    auto job = std::make_shared<Job>();
    engine::Uuid uuid = engine::generate_uuid();
    job->uuid = engine::uuid_to_string(uuid);
    job->backup_file = string_arg(arguments, "backup-file");
    job->start_time = std::time(nullptr);
    for (const Device &device : devices)
        job->total += device.size;
    job->dirty = job->total;
    int64_t speed = integer_arg(arguments, "speed");

    if (format == "pbs") {
        for (const char *required : {"password", "backup-id", "backup-time"}) {
            if (!arguments.has(required))
                throw QmpError(std::string("missing parameter '") + required + "'");
        }
        bool use_bitmap = boolean_arg(arguments, "use-dirty-bitmap");
        bool incremental = use_bitmap && had_pbs_backup_ && options_.pbs_dirty >= 0;
        if (incremental)
            job->dirty = std::min<uint64_t>(job->total, static_cast<uint64_t>(options_.pbs_dirty));
        job->reused = job->total - job->dirty;
        for (const Device &device : devices) {
            Json entry = Json::object();
            entry.set("drive", Json::string(device.name));
            entry.set("action", Json::string(!use_bitmap ? "not-used" : incremental ? "used" : "new"));
            entry.set("size", Json::integer(static_cast<int64_t>(device.size)));
            entry.set("dirty", Json::integer(static_cast<int64_t>(incremental ? job->dirty / devices.size()
                                                                              : device.size)));
            bitmaps_.append(entry);
        }
        had_pbs_backup_ = true;
        job->thread = std::thread(run_pbs, job, std::cref(options_), speed);
    } else {
        std::string file = job->backup_file;
        engine::Fd output;
        if (file.starts_with("/dev/fdname/")) {
            auto named = vm.named_fds.find(file.substr(12));
            if (named == vm.named_fds.end())
                throw QmpError("can't open file " + file + " - " + engine::errno_text(EBADF));
            output = std::move(named->second);
            vm.named_fds.erase(named);
        } else {
            output = engine::Fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
            if (!output)
                throw QmpError("can't open file " + file + " - " + engine::errno_text(errno));
        }
        // the writer does blocking writes (pve-qemu's coroutines set O_NONBLOCK)
        int flags = ::fcntl(output.get(), F_GETFL);
        ::fcntl(output.get(), F_SETFL, flags & ~O_NONBLOCK);

        auto writer = std::make_unique<engine::vma::Writer>(output.get(), engine::vma::WriterOptions{uuid, {}});
        for (const char *key : {"config-file", "firewall-file"}) {
            if (!arguments.has(key))
                continue;
            std::string path = string_arg(arguments, key);
            std::string data = read_config(path);
            try {
                writer->add_config(basename_of(path), data);
            } catch (const engine::Error &) {
                throw QmpError("unable to add " + path + " config data to vma archive");
            }
        }
        std::vector<engine::vma::DeviceId> ids;
        for (const Device &device : devices)
            ids.push_back(writer->add_device(device.name, device.size));
        job->thread = std::thread(run_vma, job, std::move(writer), std::move(output), devices, ids,
                                  std::cref(options_), speed);
    }
    job_ = job;
    // --backup-error-at 0: the job has failed by the time `backup` returns,
    // so the first query-backup already reports the error
    if (options_.backup_error_at == 0)
        job->thread.join();

    Json reply = Json::object();
    reply.set("UUID", Json::string(job->uuid));
    return reply;
}

Json Backups::query_backup() const
{
    Json status = Json::object();
    if (!job_) {
        status.set("finishing", Json::boolean(false));
        return status;
    }
    std::lock_guard guard(job_->lock);
    bool done = job_->status == "done";
    status.set("status", Json::string(done && !options_.end_status.empty() ? options_.end_status : job_->status));
    if (job_->status == "error")
        status.set("errmsg", Json::string(job_->errmsg));
    status.set("total", Json::integer(static_cast<int64_t>(job_->total)));
    status.set("dirty", Json::integer(static_cast<int64_t>(job_->dirty)));
    status.set("transferred", Json::integer(static_cast<int64_t>(job_->transferred.load())));
    status.set("zero-bytes", Json::integer(static_cast<int64_t>(job_->zero_bytes.load())));
    status.set("reused", Json::integer(static_cast<int64_t>(job_->reused)));
    status.set("start-time", Json::integer(job_->start_time));
    if (job_->end_time)
        status.set("end-time", Json::integer(job_->end_time));
    status.set("backup-file", Json::string(job_->backup_file));
    status.set("uuid", Json::string(job_->uuid));
    status.set("finishing", Json::boolean(job_->finishing.load()));
    return status;
}

Json Backups::cancel()
{
    if (job_) {
        job_->cancel = true;
        job_->end("backup canceled");
    }
    return Json::object();
}

Json Backups::bitmap_info() const
{
    return bitmaps_;
}

Json Backups::access_setup(const Vm &vm, const Json &arguments)
{
    check_arguments(arguments, {{"target-id", Type::string, true}, {"devices", Type::array, true}});
    std::string target = string_arg(arguments, "target-id");
    if (job_active() || !access_target_.empty())
        throw QmpError("previous backup for target '" + (access_target_.empty() ? kTarget : access_target_) +
                       "' not finished");
    Json devices = arguments.member("devices");
    Json result = Json::array();
    Json bitmaps = Json::array();
    std::vector<std::string> nodes;
    for (size_t i = 0; i < devices.size(); i++) {
        Json entry = devices.at(i);
        check_arguments(entry, {{"device", Type::string, true}, {"bitmap-mode", Type::string}});
        std::string name = string_arg(entry, "device");
        const Drive *drive = vm.find_device(name);
        if (!drive)
            throw QmpError("Device '" + name + "' not found");
        if (!vm.find_device(name + "-fleecing"))
            throw QmpError("Device '" + name + "-fleecing' not found");
        std::string mode = string_arg(entry, "bitmap-mode", "none");
        if (mode != "none" && mode != "new" && mode != "use")
            throw QmpError("Parameter 'bitmap-mode' does not accept value '" + mode + "'");
        Json info = Json::object();
        std::string node = "snapshot-access-" + name;
        info.set("node-name", Json::string(node));
        info.set("device", Json::string(name));
        info.set("size", Json::integer(static_cast<int64_t>(drive->size)));
        if (mode != "none") {
            std::string action = mode == "use" ? "used" : "new";
            info.set("bitmap-node-name", Json::string(drive->node_name));
            info.set("bitmap-name", Json::string(target));
            info.set("bitmap-action", Json::string(action));
            Json bitmap = Json::object();
            bitmap.set("drive", Json::string(name));
            bitmap.set("action", Json::string(action));
            bitmap.set("size", Json::integer(static_cast<int64_t>(drive->size)));
            bitmap.set("dirty", Json::integer(static_cast<int64_t>(drive->size)));
            bitmaps.append(bitmap);
        }
        nodes.push_back(node);
        result.append(info);
    }
    access_target_ = target;
    access_nodes_ = nodes;
    bitmaps_ = bitmaps;
    return result;
}

Json Backups::access_teardown(const Json &arguments)
{
    check_arguments(arguments, {{"target-id", Type::string, true}, {"success", Type::boolean, true}});
    std::string target = string_arg(arguments, "target-id");
    if (!access_target_.empty() && target != access_target_) {
        throw QmpError("cannot teardown backup access - got target " + target + " instead of " +
                       access_target_);
    }
    access_target_.clear();
    access_nodes_.clear();
    return Json::object();
}

bool Backups::is_access_node(const std::string &node_name) const
{
    for (const std::string &node : access_nodes_) {
        if (node == node_name)
            return true;
    }
    return false;
}

} // namespace pve_sim
