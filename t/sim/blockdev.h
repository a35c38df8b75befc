// pve-qemu 10's block graph commands: blockdev-add, blockdev-del and
// query-named-block-nodes on the VM's nodes, with QEMU's error texts, and
// the node graph qemu-server 9 starts a VM's disks with (-blockdev).
#pragma once

#include "util/json.h"
#include "vm.h"

#include <string>

namespace pve_sim {

// Replaces the VM disk `drive` (as --drive gives it: BlockBackend name
// drive-<key>) by qemu-server 9's -blockdev graph: a throttle node
// drive-<key> used by device <key>, over a format node f<key> over a file
// node e<key>. Both lower nodes are the throttle node's implicit children.
void attach_as_blockdev(Vm &vm, const Drive &drive);

// blockdev-add: driver file (filename), raw (file, offset, size) or qcow2
// (file) with the common options; children given inline are opened first
// and belong to their parent. Throws QmpError with QEMU's texts ("Duplicate
// nodes with node-name='X'", "Could not open 'F': <strerror>", ...).
engine::Json blockdev_add(Vm &vm, const engine::Json &arguments);

// blockdev-del: removes a monitor-owned root and the implicit children it
// leaves unused. "Failed to find node with node-name='X'", "Node X is in
// use" (a device uses it), "Node X is not owned by the monitor", "Block
// device X is in use" (another node uses it).
engine::Json blockdev_del(Vm &vm, const engine::Json &arguments);

// Every named node: node-name, drv, ro, file, image, children.
engine::Json query_named_block_nodes(const Vm &vm);

} // namespace pve_sim
