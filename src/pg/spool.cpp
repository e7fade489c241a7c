#include "spool.hpp"

#include "error_boundary.hpp"
#include "state.hpp"

extern "C" {
#include "access/xlog.h"
}

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace flint::pg {

namespace {

std::string path_of(uint64_t sequence) { return std::string(kSpoolDir) + "/" + spool_file_name(sequence); }

[[noreturn]] void io_failed(const std::string &what, int err) {
    throw FlintError("58030", "flint_keys: could not " + what + ": " + strerror(err), {},
                     "Check the free space and permissions of the data directory.");
}

void fsync_path(const std::string &path, bool directory) {
    int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0)
        io_failed("open " + path, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0)
        io_failed("fsync " + path, err);
}

void ensure_directory() {
    if (::mkdir(kSpoolDir, S_IRWXU) == 0)
        fsync_path(".", true);
    else if (errno != EEXIST)
        io_failed(std::string("create ") + kSpoolDir, errno);
}

} // namespace

std::vector<uint64_t> spool_sequences() {
    std::vector<uint64_t> out;
    DIR *dir = ::opendir(kSpoolDir);
    if (!dir)
        return out;
    while (struct dirent *e = ::readdir(dir)) {
        uint64_t seq;
        if (parse_spool_file_name(e->d_name, &seq))
            out.push_back(seq);
    }
    ::closedir(dir);
    std::sort(out.begin(), out.end());
    return out;
}

void spool_write(uint64_t sequence, const std::string &bytes) {
    ensure_directory();
    const std::string final_path = path_of(sequence), tmp = final_path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, S_IRUSR | S_IWUSR);
    if (fd < 0)
        io_failed("create " + tmp, errno);
    size_t done = 0;
    int err = 0;
    while (done < bytes.size() && !err) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno != EINTR)
            err = errno;
        else if (n > 0)
            done += static_cast<size_t>(n);
    }
    if (!err && ::fsync(fd) != 0)
        err = errno;
    ::close(fd);
    if (!err && ::rename(tmp.c_str(), final_path.c_str()) != 0)
        err = errno;
    if (err) {
        ::unlink(tmp.c_str());
        io_failed("write " + final_path, err);
    }
    try {
        fsync_path(kSpoolDir, true);
    } catch (const FlintError &) {
        // Renamed: the batch is there and counts as spooled (its id is used);
        // the next batch's directory fsync makes the entry durable.
    }
}

bool spool_read(uint64_t sequence, std::string *bytes) {
    const std::string path = path_of(sequence);
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) {
        if (errno == ENOENT)
            return false;
        io_failed("open " + path, errno);
    }
    bytes->clear();
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            ::close(fd);
            io_failed("read " + path, err);
        }
        if (n == 0)
            break;
        bytes->append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return true;
}

void spool_remove(uint64_t sequence, uint64_t bytes, uint64_t rows) {
    const std::string path = path_of(sequence);
    if (::unlink(path.c_str()) != 0) {
        if (errno == ENOENT)
            return; // the other process removed it first (a promotion race): already accounted
        io_failed("remove " + path, errno);
    }
    fsync_path(kSpoolDir, true);
    ForwardState &f = shared_state->forward;
    pg_atomic_fetch_sub_u64(&f.spool_bytes, std::min(bytes, pg_atomic_read_u64(&f.spool_bytes)));
    pg_atomic_fetch_sub_u64(&f.spool_rows, std::min(rows, pg_atomic_read_u64(&f.spool_rows)));
}

bool spool_load(uint64_t sequence, std::string *bytes, SpoolBatch *batch) {
    if (!spool_read(sequence, bytes))
        return false;
    SpoolRead read = decode_spool_batch(bytes->data(), bytes->size(), batch);
    if (read == SpoolRead::ok)
        return true;
    const std::string message = "flint_keys: spool batch " + spool_file_name(sequence) + " is damaged (" +
                                spool_read_name(read) + "); set aside as " + spool_file_name(sequence) + ".damaged";
    pg_guard([&] { ereport(WARNING, (errmsg("%s", message.c_str()))); });
    long rows = spool_batch_rows(bytes->data(), bytes->size());
    spool_set_aside(sequence, bytes->size(), rows > 0 ? static_cast<uint64_t>(rows) : 0);
    return false;
}

void spool_set_aside(uint64_t sequence, uint64_t bytes, uint64_t rows) {
    const std::string path = path_of(sequence), aside = path + ".damaged";
    if (::rename(path.c_str(), aside.c_str()) != 0)
        io_failed("rename " + path, errno);
    fsync_path(kSpoolDir, true);
    ForwardState &f = shared_state->forward;
    pg_atomic_fetch_sub_u64(&f.spool_bytes, std::min(bytes, pg_atomic_read_u64(&f.spool_bytes)));
    pg_atomic_fetch_sub_u64(&f.spool_rows, std::min(rows, pg_atomic_read_u64(&f.spool_rows)));
    // What the batch counted when it was written may not be what its damaged
    // file says now (a header gone, a file cut short): the worker recounts.
    pg_atomic_write_u32(&f.recount, 1);
    if (Latch *latch = shared_state->worker_latch)
        SetLatch(latch);
}

namespace {

// A batch a crash interrupted before its rename: never complete, never counted.
void remove_unfinished() {
    DIR *dir = ::opendir(kSpoolDir);
    if (!dir)
        return;
    while (struct dirent *e = ::readdir(dir)) {
        size_t len = std::strlen(e->d_name);
        if (len > 4 && std::strcmp(e->d_name + len - 4, ".tmp") == 0)
            (void)::unlink((std::string(kSpoolDir) + "/" + e->d_name).c_str());
    }
    ::closedir(dir);
}

// The spool's files: their bytes (from stat) and rows (from the header
// alone), and the newest sequence.
void count_spool(uint64_t *bytes_out, uint64_t *rows_out, uint64_t *last_out) {
    uint64_t bytes = 0, rows = 0, last = 0;
    for (uint64_t seq : spool_sequences()) {
        // The header alone: the row count; the file's size from stat.
        const std::string path = path_of(seq);
        int fd = ::open(path.c_str(), O_RDONLY);
        if (fd < 0)
            continue;
        char header[kSpoolHeaderSize];
        struct stat st;
        ssize_t n = ::read(fd, header, sizeof header);
        bool sized = ::fstat(fd, &st) == 0;
        ::close(fd);
        long count = n == static_cast<ssize_t>(sizeof header) ? spool_batch_rows(header, sizeof header) : -1;
        bytes += sized ? static_cast<uint64_t>(st.st_size) : 0;
        rows += count > 0 ? static_cast<uint64_t>(count) : 0;
        last = seq;
    }
    *bytes_out = bytes;
    *rows_out = rows;
    *last_out = last;
}

} // namespace

void spool_account_at_start() {
    // The forwarder removes nothing while the spool is being counted.
    pg_atomic_write_u32(&shared_state->forward.spool_ready, 0);
    remove_unfinished();
    uint64_t bytes = 0, rows = 0, last = 0;
    count_spool(&bytes, &rows, &last);
    ForwardState &f = shared_state->forward;
    pg_atomic_write_u64(&f.spool_bytes, bytes);
    pg_atomic_write_u64(&f.spool_rows, rows);
    if (last > pg_atomic_read_u64(&f.spooled_seq))
        pg_atomic_write_u64(&f.spooled_seq, last);
    pg_atomic_write_u32(&f.spool_ready, 1);
    if (Latch *latch = f.forwarder_latch)
        SetLatch(latch);
}

size_t spool_room_rows() {
    uint64_t limit = static_cast<uint64_t>(guc_log_spool_size_mb) * 1024 * 1024;
    uint64_t used = pg_atomic_read_u64(&shared_state->forward.spool_bytes) + kSpoolHeaderSize;
    return used >= limit ? 0 : static_cast<size_t>((limit - used) / sizeof(LogRecord));
}

void spool_recount() {
    uint64_t bytes = 0, rows = 0, last = 0;
    ForwardState &f = shared_state->forward;
    pg_atomic_write_u32(&f.recount, 0);
    count_spool(&bytes, &rows, &last);
    pg_atomic_write_u64(&f.spool_bytes, bytes);
    pg_atomic_write_u64(&f.spool_rows, rows);
}

} // namespace flint::pg
