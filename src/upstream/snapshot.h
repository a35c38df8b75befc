// A point-in-time snapshot of a running QEMU's disks, built from stock QEMU
// (7.1+) block nodes and exported read-only over NBD:
//
//   device --> copy-before-write filter --> original node      (guest I/O)
//                      |--> fleecing image (old data saved before a write)
//   snapshot-access node on the filter --> NBD export named like the drive
//
// Every disk switches onto its filter at one instant: the VM is paused for
// the switch when it runs (stop, qom-set each device, cont), so the snapshot
// of all disks is consistent. A drive without a guest device (PVE's
// drive_add'ed TPM state copy) is exported as it is: nothing writes to it.
//
// Contract:
// - Each step talks QMP to `peer` with one connection per command; QMP
//   failures throw engine::qmp::CommandFailed ("VM <vmid> qmp command '<x>'
//   failed - <desc>"), others engine::Error.
// - The object owns everything it adds to QEMU and every temp image it
//   creates: restore() (or the destructor) deletes the exports, stops the NBD
//   server, removes the snapshot-access and filter nodes, puts each device
//   back on its original node, removes the fleecing nodes and temp images —
//   in that order, trying every step even when QEMU is gone, and leaves a
//   paused-for-the-switch VM running again.
// - Node names are fixed per drive (node_names.h), so one backup per VM at a
//   time; what a killed backup left behind is removed first (leftovers.h).
#pragma once

#include "qmp/monitor.h"
#include "upstream/fleecing_image.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace engine::upstream {

struct DiskRequest {
    std::string device;              // QEMU drive id, e.g. "drive-scsi0"
    std::string fleecing_path;       // an allocated fleecing image, or empty for a temp one
    std::string fleecing_format;     // its QEMU format ("raw", "qcow2")
};

struct SnapshotOptions {
    qmp::Peer peer;
    std::vector<DiskRequest> disks;
    // temp fleecing images and the NBD socket go here
    std::string work_dir;
    // warnings of a cleanup that did not fully work (one line each)
    std::function<void(const std::string &)> log;
};

class Snapshot {
public:
    struct Disk {
        std::string device;        // "drive-scsi0"
        std::string id;            // "scsi0"
        std::string qom_path;      // the guest device, empty if it has none
        std::string original_node; // the node the device sat on before
        std::uint64_t size = 0;    // virtual size as QEMU sees it
        std::string export_name;   // the NBD export, once exported
        // how far the setup got, for restore()
        std::optional<FleecingImage> image;
        bool fleece_added = false;
        bool filter_added = false;
        bool switched = false;
        bool access_added = false;
    };

    // Removes an earlier backup's leftovers, reads query-block and adds the
    // fleecing and filter nodes (not yet in the guest's I/O path). Throws "drive '<d>' not found in QEMU" for an
    // unknown or empty drive; undoes its own steps when it throws.
    explicit Snapshot(SnapshotOptions options);
    ~Snapshot();
    Snapshot(const Snapshot &) = delete;
    Snapshot &operator=(const Snapshot &) = delete;

    // Switches all devices onto their filters at one instant; from here on
    // the snapshot holds. The VM runs again afterwards if it ran before.
    void take();

    // Starts QEMU's NBD server on "<work_dir>/nbd.sock" and exports each
    // disk's snapshot read-only under its drive name.
    void export_over_nbd();

    const std::vector<Disk> &disks() const { return disks_; }
    const std::string &nbd_socket() const { return nbd_socket_; }

    // Undoes every step taken, in reverse. Throws the first failure (as
    // engine::Error "unable to restore the block graph - <step> - <why>")
    // after attempting all steps; later calls do nothing.
    void restore();

private:
    Json qmp(const std::string &execute, const Json &arguments);
    void prepare_disk(Disk &disk, const DiskRequest &request);
    void set_device_node(const Disk &disk, const std::string &node);

    SnapshotOptions options_;
    std::vector<Disk> disks_;
    std::string nbd_socket_;
    bool nbd_started_ = false;
    bool restored_ = false;
};

} // namespace engine::upstream
