#include "nbd/write_queue.h"

#include "util/error.h"

#include <algorithm>
#include <cstring>

namespace engine::nbd {

WriteQueue::WriteQueue(Connection &connection, std::size_t slot_size, unsigned slots)
    : connection_(connection), slot_size_(std::min(slot_size, connection.max_request()))
{
    if (slot_size_ == 0 || slots == 0)
        throw Error("NBD write queue: slot size and slot count must be positive");
    for (unsigned i = 0; i < slots; i++) {
        auto slot = std::make_unique<Slot>();
        slot->data.reset(new std::uint8_t[slot_size_]);
        free_.push_back(slot.get());
        slots_.push_back(std::move(slot));
    }
    thread_ = std::thread([this] { run(); });
}

WriteQueue::~WriteQueue()
{
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
}

void WriteQueue::check_failed() const
{
    if (error_)
        std::rethrow_exception(error_);
}

WriteQueue::Slot &WriteQueue::take_free_slot(std::unique_lock<std::mutex> &lock)
{
    changed_.wait(lock, [&] { return error_ || !free_.empty(); });
    check_failed();
    Slot *slot = free_.front();
    free_.pop_front();
    return *slot;
}

void WriteQueue::submit(Slot &slot)
{
    queued_.push_back(&slot);
    busy_++;
    changed_.notify_all();
}

void WriteQueue::write(const void *data, std::size_t len, std::uint64_t offset)
{
    const auto *bytes = static_cast<const std::uint8_t *>(data);
    for (std::size_t done = 0; done < len;) {
        std::unique_lock lock(mutex_);
        Slot &slot = take_free_slot(lock);
        lock.unlock(); // the copy needs no lock: the slot is ours until queued
        std::size_t n = std::min(slot_size_, len - done);
        std::memcpy(slot.data.get(), bytes + done, n);
        slot.offset = offset + done;
        slot.length = n;
        slot.zeroes = false;
        lock.lock();
        submit(slot);
        done += n;
    }
}

void WriteQueue::write_zeroes(std::uint64_t offset, std::uint64_t len)
{
    for (std::uint64_t done = 0; done < len;) {
        std::unique_lock lock(mutex_);
        Slot &slot = take_free_slot(lock);
        std::uint64_t n = std::min(Connection::max_zero_request(), len - done);
        slot.offset = offset + done;
        slot.length = n;
        slot.zeroes = true;
        submit(slot);
        done += n;
    }
}

void WriteQueue::drain()
{
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return error_ || busy_ == 0; });
    check_failed();
}

// Starts every queued request, then waits for the oldest in flight; a
// failure stops the queue (requests already in flight are still waited
// for: libnbd may read their buffers until they complete).
void WriteQueue::run()
{
    std::deque<Slot *> in_flight;
    std::unique_lock lock(mutex_);
    for (;;) {
        changed_.wait(lock, [&] { return stopping_ || !queued_.empty() || !in_flight.empty(); });
        bool give_up = stopping_ || error_;
        std::deque<Slot *> start;
        if (!give_up)
            start.swap(queued_);
        lock.unlock();
        try {
            for (Slot *slot : start) {
                slot->cookie = slot->zeroes ? connection_.start_write_zeroes(slot->offset, slot->length)
                                            : connection_.start_write(slot->data.get(), slot->length, slot->offset);
                in_flight.push_back(slot);
            }
        } catch (...) {
            lock.lock();
            if (!error_)
                error_ = std::current_exception();
            lock.unlock();
        }
        Slot *done = nullptr;
        if (!in_flight.empty()) {
            done = in_flight.front();
            in_flight.pop_front();
            try {
                connection_.finish_command(done->cookie, done->zeroes ? "write zeroes" : "write");
            } catch (...) {
                lock.lock();
                if (!error_)
                    error_ = std::current_exception();
                lock.unlock();
            }
        }
        lock.lock();
        if (done) {
            free_.push_back(done);
            busy_--;
        }
        changed_.notify_all();
        if ((stopping_ || error_) && in_flight.empty())
            return;
    }
}

} // namespace engine::nbd
