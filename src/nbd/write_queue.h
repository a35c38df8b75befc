// Writes to an NBD export from a thread of the queue's own, with several
// requests in flight, so that the producer (a restore reading and checking
// its archive) and the server (qemu-nbd writing a qcow2) work at the same
// time instead of taking turns. Data is copied into one of a few fixed
// buffers: memory is bounded by slots * slot_size whatever the disk size.
//
// Contract: the Connection must outlive the queue and is driven only by the
// queue's thread while the queue exists. write(), write_zeroes() and drain()
// are called from one producer thread; each throws the first error of any
// earlier request (engine::Error from connection.h), after which the queue
// takes no more. Requests must not overlap: they may complete in any order.
// The destructor waits for the requests in flight (their buffers are the
// queue's) and drops the ones not started.
#pragma once

#include "nbd/connection.h"

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace engine::nbd {

class WriteQueue {
public:
    explicit WriteQueue(Connection &connection, std::size_t slot_size = 4u << 20, unsigned slots = 4);
    ~WriteQueue();
    WriteQueue(const WriteQueue &) = delete;
    WriteQueue &operator=(const WriteQueue &) = delete;

    // Queues len bytes at offset (copied before returning); blocks while
    // every buffer is taken.
    void write(const void *data, std::size_t len, std::uint64_t offset);
    // Queues NBD write-zeroes of [offset, offset+len) (needs can_zero()).
    void write_zeroes(std::uint64_t offset, std::uint64_t len);
    // Waits until every queued request has completed.
    void drain();

private:
    struct Slot {
        std::unique_ptr<std::uint8_t[]> data;
        std::uint64_t offset = 0;
        std::uint64_t length = 0;
        bool zeroes = false;
        std::uint64_t cookie = 0;
    };

    Slot &take_free_slot(std::unique_lock<std::mutex> &lock);
    void submit(Slot &slot);
    void run();
    void check_failed() const; // with mutex_ held

    Connection &connection_;
    std::size_t slot_size_;
    std::vector<std::unique_ptr<Slot>> slots_;

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<Slot *> free_;
    std::deque<Slot *> queued_;
    std::size_t busy_ = 0; // queued or in flight
    bool stopping_ = false;
    std::exception_ptr error_;
    std::thread thread_;
};

} // namespace engine::nbd
