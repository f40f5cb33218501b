// A C++ library loaded by soloader: exceptions thrown and caught inside it
// (the unwinder must find its .eh_frame, which soloader registers with
// __register_frame), std::string / std::vector / iostreams / call_once from
// the host's libstdc++, static constructors, and a thread_local object
// with a destructor (registered through __cxa_thread_atexit, which
// soloader provides so the library stays mapped until it has run).
#include <atomic>
#include <mutex>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstring>

static std::atomic<int> ctor_runs{0};
struct StaticInit {
    StaticInit() { ++ctor_runs; }
};
static StaticInit static_init;
static std::string static_string = std::string("static-") + "ctor";

extern "C" int cxx_static_ok() { return static_string == "static-ctor" && ctor_runs.load() == 1; }

// Throws through two frames and catches: returns the message length.
static void thrower(int n) {
    if (n > 0) throw std::runtime_error("boom " + std::to_string(n));
}
static int middle(int n) { thrower(n); return -1; }
extern "C" int cxx_throw_catch(int n) {
    try {
        return middle(n);
    } catch (const std::exception &e) {
        return static_cast<int>(std::strlen(e.what()));
    }
}

extern "C" long cxx_vector_sum(int n) {
    std::vector<long> v;
    for (int i = 1; i <= n; i++) v.push_back(i * 3L);
    return std::accumulate(v.begin(), v.end(), 0L);
}

extern "C" int cxx_format(char *buf, int len, int x) {
    std::ostringstream os;
    os << "x=" << x << ";hex=" << std::hex << x;
    std::string s = os.str();
    std::snprintf(buf, len, "%s", s.c_str());
    return static_cast<int>(s.size());
}

static std::once_flag once;
static std::atomic<int> once_count{0};
extern "C" int cxx_call_once() {
    std::call_once(once, [] { ++once_count; });
    return once_count.load();
}

static std::atomic<int> tl_destroyed{0};
struct ThreadLocal {
    int value = 5;
    ~ThreadLocal() { ++tl_destroyed; }
};
static thread_local ThreadLocal tl;
extern "C" int cxx_tl_next() { return tl.value++; }
extern "C" int cxx_tl_destroyed() { return tl_destroyed.load(); }
