// pve-qemu-sim: a stand-in for Proxmox's patched QEMU on its QMP side (and a
// guest agent), for tests. It listens where a VM's QEMU would, answers with
// pve-qemu's argument names, types, reply shapes and error texts, writes a
// real VMA stream (the engine's writer) for `backup`, and appends every
// command it receives to a log as one JSON line.
//
// usage: pve-qemu-sim --qmp SOCKET [options]
//   --qmp SOCKET            the QMP socket (required); one client at a time
//   --qga SOCKET            also serve a guest agent on SOCKET
//   --log FILE              append {"socket","execute","arguments"[,"fd":true]}
//                           per received command, one JSON line each
//   --pidfile FILE          write the pid (removed on a clean exit)
//   --status S              initial run state: prelaunch, running (default), paused
//   --drive ID=PATH[,format=raw|qcow2]
//                           a drive (BlockBackend) ID, e.g. drive-scsi0; raw
//                           images are backed up, qcow2 ones only report
//                           their size (for fleecing images); repeatable
//   --support KEY=VALUE     query-proxmox-support: true, false, "absent"
//                           (drop the flag) or a string; repeatable
//   --blockdev              the drives are qemu-server 9's -blockdev graphs:
//                           throttle node drive-<key> (device <key>) over a
//                           format node over a file node
// faults (COMMAND may end in @N: only its N-th call, counting from 1):
//   --hang COMMAND          never answer it, nor anything after it on that connection
//   --drop COMMAND          close the connection instead of answering
//   --die COMMAND           exit(3) at once, leaving the socket file (a crash)
//   --fail COMMAND=DESC     answer {"error": {"class": "GenericError", "desc": DESC}}
//   --without COMMAND       answer CommandNotFound, as an older QEMU would
//   --hmp-error NAME=TEXT   the HMP command NAME (e.g. drive_add; @N as above,
//                           counted per name) prints TEXT instead of running,
//                           as QEMU's HMP reports errors; the QMP reply succeeds
//   --backup-delay MS       pause MS after every 4 MiB a backup copies (slow progress)
//   --backup-error-at BYTES fail the job ("job failed with err -5 - Input/output
//                           error") once BYTES are copied; 0: after the first
//                           batch, before `backup` returns
//   --end-status S          query-backup reports status S instead of "done" for
//                           a completed job
//   --pbs-dirty BYTES       an incremental PBS backup (use-dirty-bitmap after an
//                           earlier PBS backup) finds BYTES dirty
//   --fs-count N            what guest-fsfreeze-freeze/-thaw return (default 1)
//   --interleave            write the devices' clusters interleaved and out of
//                           order, as copy-before-write makes pve-qemu do
// Exits 0 after `quit`, SIGTERM or SIGINT, removing its sockets and pid file.
#include "options.h"
#include "server.h"

#include <cstdio>
#include <exception>

int main(int argc, char **argv)
{
    try {
        pve_sim::Options options = pve_sim::parse_options(argc, argv);
        pve_sim::Server server(options);
        return server.run();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "pve-qemu-sim: %s\n", e.what());
        return 2;
    }
}
