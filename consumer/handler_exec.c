/* handler_exec.c - HANDLER=exec:<command> [args]: a process per job, fed and read through
 * non-blocking pipes from the caller's poll.
 *
 * The command line is split into words once, at start-up, without a shell: words are
 * separated by spaces or tabs; '...' quotes literally, "..." quotes with \" and \\ as
 * escapes, and outside quotes a backslash escapes the next character. No expansion, no
 * globbing, no redirection (for those, run `/bin/sh -c '...'` as the command). The first
 * word is looked up in PATH when it has no '/'. Nothing of a message is ever part of the
 * command line: the payload goes to stdin, the metadata to the environment (the consumer's
 * own, plus RELAYQ_MESSAGE_ID, RELAYQ_CORRELATION_ID, RELAYQ_ATTEMPT (0 on the first
 * delivery), RELAYQ_SOURCE, RELAYQ_CONTENT_TYPE (application/json when none), and
 * TRACEPARENT / TRACESTATE when set: inherited values of these names are dropped).
 *
 * The child gets stdin, stdout and stderr as pipes and no other descriptor (closefrom after
 * the dup2s, and every descriptor of ours is close-on-exec), default signal dispositions
 * (the consumer ignores SIGPIPE: a child must not inherit that), an empty signal mask, and
 * its own process group. Outcomes: exit status 0 is OK with stdout as the reply (at most
 * max_reply bytes: more kills it, RETRY); any other exit, or death by a signal, is RETRY
 * with why "command exited with status N: <first 200 bytes of stderr>"; past
 * HANDLER_TIMEOUT_MS its process group is killed (SIGKILL) and the job is RETRY. A job ends
 * when the process has exited and both output pipes are closed; it is reaped then (exit is
 * observed with waitid(WNOWAIT), so the process group stays valid for a kill until the
 * reap). Exits are watched with a pidfd when the kernel has them, else by a 10 ms poll hint.
 * Writes to the stdin pipe block SIGPIPE for the calling thread and discard the one they
 * raise (a child that exits without reading its input is fine), whatever the process's
 * SIGPIPE disposition. cancel_all() kills every group and reaps every process (blocking
 * only for the kernel to finish a SIGKILL). Nothing else in the process may wait for
 * children with waitpid(-1) or set SIGCHLD to SIG_IGN. */
#define _GNU_SOURCE /* posix_spawn_file_actions_addclosefrom_np */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handler_impl.h"
#include "list.h"
#include "util.h"

extern char **environ;

#define EX_CHUNK 65536

enum { EX_RUNNING = 0, EX_TIMEOUT, EX_OVERFLOW, EX_NOMEM };

typedef struct ex_proc {
    rq_list_node_t node; /* in active or finished */
    rq_handler_job_t *job;
    pid_t pid; /* 0: never started (spawn failed), or reaped */
    int pidfd, in_fd, out_fd, err_fd;
    size_t in_off;
    char *out;
    size_t out_len, out_cap;
    char err[RQ_HANDLER_WHY_BODY];
    size_t err_len;
    int64_t deadline_ms;
    int exited, killed;
    rq_handler_outcome_t outcome;
    int status;
    char why[256];
} ex_proc_t;

typedef struct exec_h {
    char **argv; /* into argbuf */
    char *argbuf;
    rq_handler_opts_t o;
    rq_list_t active, finished;
} exec_h_t;

/* ---- the command line ---- */

/* Splits s into words (see the top). Returns 0 with *argv (NULL-terminated, pointing into
 * *buf; the caller frees both), or -1 with err set. */
static int split_words(const char *s, char ***argv, char **buf, char *err, size_t errlen)
{
    size_t len = strlen(s), n = 0, cap = 8;
    char *b = malloc(len + 1), *w = b, **v = malloc(cap * sizeof(*v));
    int in_word = 0;

    if (b == NULL || v == NULL) {
        rq_errf(err, errlen, "HANDLER exec: out of memory");
        goto fail;
    }
    for (const char *p = s;; p++) {
        char c = *p;

        if (c == '\0' || c == ' ' || c == '\t') {
            if (in_word) {
                *w++ = '\0';
                in_word = 0;
            }
            if (c == '\0')
                break;
            continue;
        }
        if (!in_word) {
            if (n + 2 > cap) {
                char **nv = realloc(v, 2 * cap * sizeof(*v));

                if (nv == NULL) {
                    rq_errf(err, errlen, "HANDLER exec: out of memory");
                    goto fail;
                }
                v = nv;
                cap *= 2;
            }
            v[n++] = w;
            in_word = 1;
        }
        if (c == '\'') {
            for (p++; *p && *p != '\''; p++)
                *w++ = *p;
            if (*p == '\0') {
                rq_errf(err, errlen, "HANDLER exec: unterminated ' in the command line");
                goto fail;
            }
        } else if (c == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                    p++;
                *w++ = *p;
            }
            if (*p == '\0') {
                rq_errf(err, errlen, "HANDLER exec: unterminated \" in the command line");
                goto fail;
            }
        } else if (c == '\\' && p[1]) {
            *w++ = *++p;
        } else {
            *w++ = c;
        }
    }
    if (n == 0) {
        rq_errf(err, errlen, "HANDLER exec: no command after \"exec:\"");
        goto fail;
    }
    v[n] = NULL;
    *argv = v;
    *buf = b;
    return 0;
fail:
    free(b);
    free(v);
    return -1;
}

/* 0 when cmd can be executed (a path, or found in PATH), else -1 with err set. */
static int check_command(const char *cmd, char *err, size_t errlen)
{
    const char *path = getenv("PATH");
    char full[4096];

    if (strchr(cmd, '/')) {
        if (access(cmd, X_OK) == 0)
            return 0;
        return rq_errf(err, errlen, "HANDLER exec: %.200s: %s", cmd, RQ_STRERR(errno));
    }
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        const char *e = strchr(p, ':');
        size_t dl = e ? (size_t)(e - p) : strlen(p);

        if (snprintf(full, sizeof(full), "%.*s/%s", (int)dl, dl ? p : ".", cmd) <
                (int)sizeof(full) &&
            access(full, X_OK) == 0)
            return 0;
        p += dl + (e ? 1 : 0);
    }
    return rq_errf(err, errlen, "HANDLER exec: %.200s: not found in PATH", cmd);
}

/* ---- descriptors ---- */

/* A pipe with both ends close-on-exec and above 2 (so the child's dup2s onto 0..2 never
 * clobber one another), parent_end made non-blocking. Returns 0 or -1 (errno). */
static int make_pipe(int fds[2], int parent_end)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        if (fds[i] <= 2) {
            int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);

            if (d < 0) {
                int e = errno;

                close(fds[0]);
                close(fds[1]);
                errno = e;
                return -1;
            }
            close(fds[i]);
            fds[i] = d;
        }
    }
    fcntl(fds[parent_end], F_SETFL, fcntl(fds[parent_end], F_GETFL) | O_NONBLOCK);
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* write() that never raises SIGPIPE in the process: blocked for this thread during the
 * call, and the one the call raised is taken back. */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t n)
{
    sigset_t pipe_set, old, pending;
    ssize_t w;
    int e, was_pending;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    w = write(fd, buf, n);
    e = errno;
    if (w < 0 && e == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};

        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return w;
}

/* ---- the environment ---- */

static const char *const own_vars[] = {
    "RELAYQ_MESSAGE_ID=",   "RELAYQ_CORRELATION_ID=", "RELAYQ_ATTEMPT=", "RELAYQ_SOURCE=",
    "RELAYQ_CONTENT_TYPE=", "TRACEPARENT=",           "TRACESTATE="};
#define N_OWN (sizeof(own_vars) / sizeof(own_vars[0]))

static char *var(const char *name_eq, const char *value)
{
    size_t a = strlen(name_eq), b = strlen(value);
    char *s = malloc(a + b + 1);

    if (s) {
        memcpy(s, name_eq, a);
        memcpy(s + a, value, b + 1);
    }
    return s;
}

/* The child's environment: ours without own_vars, then the job's. NULL: no memory. The
 * strings of ours are borrowed; free with free_env(env, first_own). */
static char **build_env(const rq_handler_job_t *j, size_t *first_own)
{
    size_t n = 0, k = 0;
    char attempt[16], **env;
    const char *vals[N_OWN];

    for (char **e = environ; e && *e; e++)
        n++;
    env = calloc(n + N_OWN + 1, sizeof(*env));
    if (env == NULL)
        return NULL;
    for (char **e = environ; e && *e; e++) {
        size_t i;

        for (i = 0; i < N_OWN && strncmp(*e, own_vars[i], strlen(own_vars[i])) != 0; i++)
            ;
        if (i == N_OWN)
            env[k++] = *e;
    }
    *first_own = k;
    snprintf(attempt, sizeof(attempt), "%d", j->attempt);
    vals[0] = j->message_id ? j->message_id : "";
    vals[1] = j->correlation_id ? j->correlation_id : "";
    vals[2] = attempt;
    vals[3] = j->source ? j->source : "";
    vals[4] = j->content_type && j->content_type[0] ? j->content_type : "application/json";
    vals[5] = j->traceparent ? j->traceparent : "";
    vals[6] = j->tracestate ? j->tracestate : "";
    for (size_t i = 0; i < N_OWN; i++) {
        if (i >= 5 && vals[i][0] == '\0')
            continue; /* trace context only when set */
        env[k] = var(own_vars[i], vals[i]);
        if (env[k] == NULL) {
            for (size_t f = *first_own; f < k; f++)
                free(env[f]);
            free(env);
            return NULL;
        }
        k++;
    }
    env[k] = NULL;
    return env;
}

static void free_env(char **env, size_t first_own)
{
    if (env == NULL)
        return;
    for (size_t i = first_own; env[i]; i++)
        free(env[i]);
    free(env);
}

/* ---- a job ---- */

static void proc_free(ex_proc_t *p)
{
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    close_fd(&p->pidfd);
    free(p->out);
    free(p);
}

/* Kills p's process group (the process is not reaped yet, so the group id is still its). */
static void kill_group(ex_proc_t *p, int why)
{
    if (p->pid > 0 && !p->killed) {
        if (kill(-p->pid, SIGKILL) < 0)
            kill(p->pid, SIGKILL);
        p->killed = why;
    }
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
}

/* Reaps p (exited) and sets its outcome. */
static void proc_end(exec_h_t *x, ex_proc_t *p)
{
    int st = 0;
    char prefix[96];

    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    p->pid = 0;
    close_fd(&p->pidfd);
    p->status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 0;
    p->outcome = RQ_HANDLER_RETRY;
    if (p->killed == EX_TIMEOUT) {
        snprintf(p->why, sizeof(p->why),
                 "command timed out after %d ms (HANDLER_TIMEOUT_MS) and was killed",
                 x->o.timeout_ms);
    } else if (p->killed == EX_OVERFLOW) {
        snprintf(p->why, sizeof(p->why),
                 "command wrote more than %zu bytes to stdout and was killed", x->o.max_reply);
    } else if (p->killed == EX_NOMEM) {
        snprintf(p->why, sizeof(p->why), "command: out of memory for its output");
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        p->outcome = RQ_HANDLER_OK;
    } else {
        if (WIFSIGNALED(st))
            snprintf(prefix, sizeof(prefix), "command killed by signal %d: ", WTERMSIG(st));
        else
            snprintf(prefix, sizeof(prefix), "command exited with status %d: ", p->status);
        rq_handler_why_quote(p->why, sizeof(p->why), prefix, p->err, p->err_len);
    }
    rq_list_unlink(&x->active, &p->node);
    rq_list_push_back(&x->finished, &p->node);
}

/* Writes what the child's stdin takes of the payload; closes it at the end (EOF) or when
 * the child stops reading (EPIPE: fine, it need not read it all). */
static void pump_stdin(ex_proc_t *p)
{
    const rq_handler_job_t *j = p->job;
    ssize_t r;

    while (p->in_fd >= 0) {
        size_t left = j->payload_len - p->in_off;

        if (left == 0) {
            close_fd(&p->in_fd); /* EOF for the child */
            break;
        }
        r = write_nosigpipe(p->in_fd, j->payload + p->in_off, left);
        if (r > 0) {
            p->in_off += (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            if (!(r < 0 && errno == EAGAIN))
                close_fd(&p->in_fd);
            break;
        }
    }
}

/* Appends r bytes of chunk to p's reply (stdout), bounded by max_reply. Returns 0, or -1
 * when p was killed (over the bound, out of memory). */
static int keep_stdout(exec_h_t *x, ex_proc_t *p, const char *chunk, size_t r)
{
    size_t need = p->out_len + r + 1;

    if (r > x->o.max_reply - p->out_len) {
        kill_group(p, EX_OVERFLOW);
        return -1;
    }
    if (need > p->out_cap) {
        size_t cap = p->out_cap ? p->out_cap : 4096;
        char *nb;

        while (cap < need)
            cap *= 2;
        nb = realloc(p->out, cap);
        if (nb == NULL) {
            kill_group(p, EX_NOMEM);
            return -1;
        }
        p->out = nb;
        p->out_cap = cap;
    }
    memcpy(p->out + p->out_len, chunk, r);
    p->out_len += r;
    p->out[p->out_len] = '\0';
    return 0;
}

/* Reads what is ready on *fd (stdout: kept whole, bounded; stderr: its first bytes kept
 * for `why`); closes it at EOF. */
static void pump_output(exec_h_t *x, ex_proc_t *p, int *fd, int is_stdout)
{
    char chunk[EX_CHUNK];
    ssize_t r;

    while (*fd >= 0) {
        r = read(*fd, chunk, sizeof(chunk));
        if (r > 0 && is_stdout) {
            if (keep_stdout(x, p, chunk, (size_t)r) < 0)
                break;
        } else if (r > 0) {
            size_t keep = sizeof(p->err) - p->err_len;

            if (keep > (size_t)r)
                keep = (size_t)r;
            memcpy(p->err + p->err_len, chunk, keep);
            p->err_len += keep;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            if (!(r < 0 && errno == EAGAIN))
                close_fd(fd); /* EOF */
            break;
        }
    }
}

/* Moves what is ready through p's pipes; ends p when it is done. */
static void proc_pump(exec_h_t *x, ex_proc_t *p, int64_t now_ms)
{
    pump_stdin(p);
    pump_output(x, p, &p->out_fd, 1);
    pump_output(x, p, &p->err_fd, 0);
    if (!p->exited) {
        siginfo_t si;

        memset(&si, 0, sizeof(si));
        if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0)
            p->exited = 1;
    }
    if (p->exited && now_ms >= p->deadline_ms) {
        /* It exited: its status stands, however late the worker looks (a slow fdatasync
         * held the thread) or whatever still holds its pipes (a background child it
         * started): let the pipes go, never report it as timed out. */
        close_fd(&p->out_fd);
        close_fd(&p->err_fd);
    } else if (!p->killed && now_ms >= p->deadline_ms) {
        kill_group(p, EX_TIMEOUT); /* the pipes are closed: it ends when it has exited */
    }
    if (p->exited && p->out_fd < 0 && p->err_fd < 0)
        proc_end(x, p);
}

static int ex_start(void *impl, rq_handler_job_t *job, int64_t now_ms)
{
    exec_h_t *x = impl;
    ex_proc_t *p = calloc(1, sizeof(*p));
    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, rc, ok = 0;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fa_ok = 0, attr_ok = 0;
    sigset_t all, none;
    size_t first_own = 0;
    char **env = NULL;
    pid_t pid = 0;

    if (p == NULL)
        goto out;
    p->job = job;
    p->pidfd = p->in_fd = p->out_fd = p->err_fd = -1;
    p->deadline_ms = now_ms + x->o.timeout_ms;
    env = build_env(job, &first_own);
    if (env == NULL || make_pipe(in, 1) < 0 || make_pipe(out, 0) < 0 || make_pipe(errp, 0) < 0)
        goto out;
    if (posix_spawn_file_actions_init(&fa) != 0)
        goto out;
    fa_ok = 1;
    if (posix_spawnattr_init(&attr) != 0)
        goto out;
    attr_ok = 1;
    sigfillset(&all);
    sigemptyset(&none);
    if (posix_spawn_file_actions_adddup2(&fa, in[0], 0) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, out[1], 1) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, errp[1], 2) != 0 ||
        posix_spawn_file_actions_addclosefrom_np(&fa, 3) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                            POSIX_SPAWN_SETSIGMASK) != 0 ||
        posix_spawnattr_setpgroup(&attr, 0) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &all) != 0 ||
        posix_spawnattr_setsigmask(&attr, &none) != 0)
        goto out;
    rc = posix_spawnp(&pid, x->argv[0], &fa, &attr, x->argv, env);
    if (rc == EAGAIN || rc == ENOMEM || rc == EMFILE || rc == ENFILE)
        goto out; /* try again later */
    if (rc != 0) {
        /* the command cannot run (vanished, not executable): the job fails, it comes back */
        p->outcome = RQ_HANDLER_RETRY;
        p->status = 127;
        snprintf(p->why, sizeof(p->why), "cannot run %.160s: %s", x->argv[0], RQ_STRERR(rc));
        rq_list_push_back(&x->finished, &p->node);
        job->priv = p;
        p = NULL;
        ok = 1;
        goto out;
    }
    p->pid = pid;
#ifdef SYS_pidfd_open
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec by default; -1: no pidfd */
#endif
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->err_fd = errp[0];
    in[1] = out[0] = errp[0] = -1;
    if (job->payload_len == 0)
        close_fd(&p->in_fd);
    rq_list_push_back(&x->active, &p->node);
    job->priv = p;
    p = NULL;
    ok = 1;
out:
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&errp[i]);
    }
    free_env(env, first_own);
    if (p)
        proc_free(p);
    return ok ? 0 : -1;
}

static int ex_pollfds(void *impl, struct pollfd *pfd, int max, int64_t now_ms, int *timeout_ms)
{
    exec_h_t *x = impl;
    int n = 0;
    int64_t next = -1;

    for (rq_list_node_t *it = x->active.head; it; it = it->next) {
        ex_proc_t *p = RQ_LIST_ENTRY(it, ex_proc_t, node);
        int64_t due = p->deadline_ms;

        if (n + 4 > max) {
            next = now_ms + 10; /* the caller's set is full: come back soon for the rest */
            break;
        }
        if (p->in_fd >= 0)
            pfd[n++] = (struct pollfd){p->in_fd, POLLOUT, 0};
        if (p->out_fd >= 0)
            pfd[n++] = (struct pollfd){p->out_fd, POLLIN, 0};
        if (p->err_fd >= 0)
            pfd[n++] = (struct pollfd){p->err_fd, POLLIN, 0};
        if (!p->exited && p->pidfd >= 0)
            pfd[n++] = (struct pollfd){p->pidfd, POLLIN, 0}; /* readable at the exit */
        if (p->killed)
            due = now_ms + (p->pidfd >= 0 ? 100 : 10); /* waiting for the kill to finish */
        else if (p->pidfd < 0 && p->out_fd < 0 && p->err_fd < 0 && due > now_ms + 10)
            due = now_ms + 10; /* no pidfd: look for the exit again soon */
        if (next < 0 || due < next)
            next = due;
    }
    if (x->finished.head)
        next = now_ms;
    *timeout_ms = next < 0 ? -1 : next <= now_ms ? 0 : (int)(next - now_ms);
    return n;
}

static int ex_collect(void *impl, int64_t now_ms, rq_handler_job_t **done, int max)
{
    exec_h_t *x = impl;
    int n = 0;

    for (rq_list_node_t *it = x->active.head, *next; it; it = next) {
        next = it->next; /* proc_pump may move it to finished */
        proc_pump(x, RQ_LIST_ENTRY(it, ex_proc_t, node), now_ms);
    }
    while (n < max && x->finished.head) {
        ex_proc_t *p = RQ_LIST_ENTRY(x->finished.head, ex_proc_t, node);
        rq_handler_job_t *j = p->job;

        rq_list_unlink(&x->finished, &p->node);
        j->outcome = p->outcome;
        j->status = p->status;
        j->reply = NULL;
        j->reply_len = 0;
        memcpy(j->why, p->why, sizeof(j->why));
        if (p->outcome == RQ_HANDLER_OK) {
            j->why[0] = '\0';
            j->reply = p->out; /* NUL-terminated; NULL for no output */
            j->reply_len = p->out_len;
            p->out = NULL;
        }
        j->priv = NULL;
        proc_free(p);
        done[n++] = j;
    }
    return n;
}

static void ex_cancel_all(void *impl)
{
    exec_h_t *x = impl;

    while (x->active.head) {
        ex_proc_t *p = RQ_LIST_ENTRY(x->active.head, ex_proc_t, node);

        kill_group(p, EX_TIMEOUT);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        rq_list_unlink(&x->active, &p->node);
        proc_free(p);
    }
    while (x->finished.head) {
        ex_proc_t *p = RQ_LIST_ENTRY(x->finished.head, ex_proc_t, node);

        rq_list_unlink(&x->finished, &p->node);
        proc_free(p);
    }
}

static void ex_free(void *impl)
{
    exec_h_t *x = impl;

    if (x == NULL)
        return;
    ex_cancel_all(x);
    free(x->argv);
    free(x->argbuf);
    free(x);
}

static const rq_handler_ops_t exec_ops = {
    .kind = "exec",
    .start = ex_start,
    .pollfds = ex_pollfds,
    .collect = ex_collect,
    .cancel_all = ex_cancel_all,
    .free = ex_free,
};

void *rq_handler_exec_new(const rq_handler_opts_t *o, const rq_handler_ops_t **ops, char *err,
                          size_t errlen)
{
    exec_h_t *x = calloc(1, sizeof(*x));

    if (x == NULL) {
        rq_errf(err, errlen, "HANDLER exec: out of memory");
        goto fail;
    }
    x->o = *o;
    if (split_words(o->target, &x->argv, &x->argbuf, err, errlen) < 0 ||
        check_command(x->argv[0], err, errlen) < 0)
        goto fail;
    *ops = &exec_ops;
    return x;
fail:
    ex_free(x);
    return NULL;
}
