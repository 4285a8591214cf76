// Thread count and the persistent worker pool.

#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace gsi {

namespace {

int parse_threads(const char* s) {
    if (!s || !*s) return 0;
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);  // OMP_NUM_THREADS may be a list "4,2": first
    if (end == s || v < 1) return 0;
    return (int)std::min<long>(v, 1024);
}

int default_threads() {
    int n = parse_threads(std::getenv("GSCODEC_NUM_THREADS"));
    if (n > 0) return n;
    n = parse_threads(std::getenv("OMP_NUM_THREADS"));
    if (n > 0) return n;
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    n = (int)std::thread::hardware_concurrency();
    return n > 0 ? n : 1;
}

std::atomic<int> g_threads{0};  // 0: not yet read from the environment

// Workers sleep on a condition variable between calls. One job at a time (calls from several
// Python threads are serialized); the caller thread works too. Resized when the requested
// thread count changes. Never destroyed: joining at interpreter exit is not needed and risky.
class Pool {
  public:
    void run(int64_t n, int nt, const std::function<void(int64_t)>& fn) {
        std::lock_guard<std::mutex> job_lock(job_mutex_);
        resize(nt - 1);
        {
            std::lock_guard<std::mutex> lk(m_);
            fn_ = &fn;
            n_ = n;
            next_.store(0, std::memory_order_relaxed);
            busy_ = (int)workers_.size();
            error_ = nullptr;
            ++generation_;
        }
        cv_work_.notify_all();
        work();
        std::unique_lock<std::mutex> lk(m_);
        cv_done_.wait(lk, [&] { return busy_ == 0; });
        fn_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

  private:
    void resize(int nworkers) {
        if ((int)workers_.size() == nworkers) return;
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        cv_work_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
        stop_ = false;
        // A new worker must not miss the job announced right after (generation_ + 1).
        for (int i = 0; i < nworkers; ++i)
            workers_.emplace_back([this, g = generation_] { loop(g); });
    }

    void work() {
        for (;;) {
            const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= n_) return;
            try {
                (*fn_)(i);
            } catch (...) {
                std::lock_guard<std::mutex> lk(m_);
                if (!error_) error_ = std::current_exception();
                next_.store(n_, std::memory_order_relaxed);  // stop handing out items
            }
        }
    }

    void loop(uint64_t seen) {
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(m_);
                cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            work();
            std::lock_guard<std::mutex> lk(m_);
            if (--busy_ == 0) cv_done_.notify_one();
        }
    }

    std::mutex job_mutex_, m_;
    std::condition_variable cv_work_, cv_done_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t)>* fn_ = nullptr;
    int64_t n_ = 0;
    std::atomic<int64_t> next_{0};
    int busy_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
};

std::atomic<Pool*> g_pool{nullptr};

#if defined(__unix__) || defined(__APPLE__)
// A forked child has none of the parent's worker threads: start afresh (the old pool leaks).
void after_fork_child() { g_pool.store(nullptr); }
#endif

Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (p) return *p;
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread won the race (no workers started yet: safe)
    return *p;
}

}  // namespace

int get_num_threads() {
    int n = g_threads.load(std::memory_order_relaxed);
    if (n > 0) return n;
    n = default_threads();
    int expected = 0;
    g_threads.compare_exchange_strong(expected, n);
    return g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) {
    if (n < 1)
        throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
    g_threads.store(std::min(n, 1024), std::memory_order_relaxed);
}

int resolve_threads(int num_threads) {
    if (num_threads < 0)
        throw std::invalid_argument("num_threads must be >= 0 (0: module default)");
    return num_threads > 0 ? std::min(num_threads, 1024) : get_num_threads();
}

// The pool is sized by nt alone (not by n), so that small jobs do not make it shrink and
// regrow.
void parallel_dynamic(int64_t n, int nt, const std::function<void(int64_t)>& fn) {
    if (nt <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    pool().run(n, nt, fn);
}

void install_fork_handler() {
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, after_fork_child);
#endif
}

}  // namespace gsi
