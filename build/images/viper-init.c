/*
 * viper-init: PID 1 of a Viper guest VM.
 *
 * One static binary plays two roles (see docs/image-pipeline.md):
 *
 *   stage 1 (as /init of the tiny initramfs): mounts /dev and /proc, loads the virtio/overlay
 *     modules listed in /viper/modules.list with finit_module(2), mounts the read-only ext4
 *     root (viper.root=, default /dev/vda), stacks an overlayfs with a tmpfs upper layer on it and
 *     switches root into the overlay (MS_MOVE + chroot, like busybox switch_root), then carries on
 *     as stage 2 in the same process.
 *   stage 2 (also when booted straight from a full initramfs that already holds the agent):
 *     mounts sys, tmp, run, dev/pts, dev/shm; sets vm.overcommit_memory=1; brings lo up;
 *     configures the interface from ip=<client>::<gw>:<mask>:<host>:<dev>:off[:<dns0>:<dns1>]
 *     with plain ioctls (the Debian cloud kernel has no IP_PNP); sets the hostname; starts
 *     /opt/viper/venv/bin/viper-agent --host 0.0.0.0 --port <viper.agent_port=, 8080>
 *     [viper.agent_arg=...] and restarts it with backoff when it dies; reaps zombies; powers the
 *     VM off on SIGTERM/SIGINT/SIGUSR2/SIGPWR, Ctrl-Alt-Del (SIGINT once RB_DISABLE_CAD is set)
 *     or the ACPI power button (KEY_POWER on /dev/input/event*, what QEMU's system_powerdown
 *     delivers).
 *
 * Logs go to /dev/console (the serial port) as "viper-init: <message> [t=<uptime>s]".
 *
 * Host-side modes for tests: `viper-init --parse-cmdline '<cmdline>'` prints the parsed settings
 * as key=value lines and exits (0 if valid, 1 if not); `viper-init --version`.
 *
 * Build: gcc -static -Os -Wall -Wextra -o viper-init viper-init.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VIPER_INIT_VERSION "1.0"
#define MAX_LIST 32
#define MAX_INPUTS 8
#define MODULES_DIR "/viper/modules"
#define MODULES_LIST "/viper/modules.list"
#define DEFAULT_AGENT "/opt/viper/venv/bin/viper-agent"

struct ipconf {
    int present;
    char client[INET_ADDRSTRLEN];
    char gateway[INET_ADDRSTRLEN];
    char netmask[INET_ADDRSTRLEN];
    char hostname[65];
    char device[IF_NAMESIZE];
    char dns[2][INET_ADDRSTRLEN];
};

struct config {
    struct ipconf ip;
    char hostname[65];
    char agent[256];
    int agent_port;
    const char *agent_args[MAX_LIST];
    int n_agent_args;
    const char *agent_env[MAX_LIST];
    int n_agent_env;
    char root[128];
    char rootfstype[32];
    char overlay_size[32];
    int stop_timeout;
    char error[256]; /* first parse error, empty if none */
};

/* ---------------------------------------------------------------- logging */

static double uptime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "viper-init: ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 24) n = (int)sizeof buf - 24;
    n += snprintf(buf + n, sizeof buf - (size_t)n, " [t=%.3fs]\n", uptime());
    if (write(STDERR_FILENO, buf, (size_t)n) < 0) { /* nothing better to do on PID 1 */
    }
}

/* ---------------------------------------------------------------- cmdline parsing */

static int copy_field(char *dst, size_t size, const char *src, size_t len) {
    if (len >= size) return -1;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

static int valid_ipv4(const char *s) {
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

static void set_error(struct config *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct config *c, const char *fmt, ...) {
    if (c->error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
}

/* ip=<client>:<server>:<gw>:<mask>:<host>:<dev>:<autoconf>[:<dns0>[:<dns1>]] (kernel nfsroot.txt).
 * The mask may also be a prefix length ("24"). */
static void parse_ip(struct config *c, const char *v) {
    struct ipconf ip;
    memset(&ip, 0, sizeof ip);
    const char *fields[9] = {0};
    size_t lens[9] = {0};
    int n = 0;
    const char *p = v;
    while (n < 9) {
        const char *e = strchr(p, ':');
        fields[n] = p;
        lens[n] = e ? (size_t)(e - p) : strlen(p);
        n++;
        if (!e) break;
        p = e + 1;
    }
    if (n == 1 && (strcmp(v, "off") == 0 || strcmp(v, "none") == 0)) return;
    if (n == 1 && (strcmp(v, "dhcp") == 0 || strcmp(v, "on") == 0 || strcmp(v, "any") == 0)) {
        set_error(c, "ip=%s: only static configuration is supported", v);
        return;
    }
    char tmp[64];
    char *dst[9] = {ip.client, NULL, ip.gateway, ip.netmask, ip.hostname, ip.device, NULL,
                    ip.dns[0], ip.dns[1]};
    size_t sizes[9] = {sizeof ip.client, 0, sizeof ip.gateway, sizeof ip.netmask,
                       sizeof ip.hostname, sizeof ip.device, 0, sizeof ip.dns[0], sizeof ip.dns[1]};
    for (int i = 0; i < n; i++) {
        if (!dst[i]) continue;
        if (copy_field(dst[i], sizes[i], fields[i], lens[i]) != 0) {
            set_error(c, "ip=: field %d is too long", i + 1);
            return;
        }
    }
    if (n >= 7 && lens[6] > 0) {
        copy_field(tmp, sizeof tmp, fields[6], lens[6] < 63 ? lens[6] : 63);
        if (strcmp(tmp, "off") != 0 && strcmp(tmp, "none") != 0) {
            set_error(c, "ip=: autoconf '%s' is not supported (use off)", tmp);
            return;
        }
    }
    if (!valid_ipv4(ip.client)) {
        set_error(c, "ip=: client address '%s' is not an IPv4 address", ip.client);
        return;
    }
    if (ip.gateway[0] && !valid_ipv4(ip.gateway)) {
        set_error(c, "ip=: gateway '%s' is not an IPv4 address", ip.gateway);
        return;
    }
    if (!ip.netmask[0]) {
        snprintf(ip.netmask, sizeof ip.netmask, "255.255.255.0");
    } else if (strspn(ip.netmask, "0123456789") == strlen(ip.netmask) && strlen(ip.netmask) <= 2) {
        int bits = atoi(ip.netmask);
        if (bits > 32) {
            set_error(c, "ip=: prefix length %d is out of range", bits);
            return;
        }
        uint32_t m = bits ? htonl(0xffffffffu << (32 - bits)) : 0;
        inet_ntop(AF_INET, &m, ip.netmask, sizeof ip.netmask);
    } else {
        struct in_addr m;
        if (inet_pton(AF_INET, ip.netmask, &m) != 1) {
            set_error(c, "ip=: netmask '%s' is not valid", ip.netmask);
            return;
        }
        uint32_t h = ntohl(m.s_addr);
        /* contiguous: the inverted mask plus one is a power of two */
        if (h != 0 && ((~h) & ((~h) + 1)) != 0) {
            set_error(c, "ip=: netmask '%s' is not contiguous", ip.netmask);
            return;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (ip.dns[i][0] && !valid_ipv4(ip.dns[i])) {
            set_error(c, "ip=: DNS server '%s' is not an IPv4 address", ip.dns[i]);
            return;
        }
    }
    if (!ip.device[0]) snprintf(ip.device, sizeof ip.device, "eth0");
    ip.present = 1;
    c->ip = ip;
}

static int parse_int(struct config *c, const char *key, const char *v, int lo, int hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        set_error(c, "%s=%s: expected a number in %d..%d", key, v, lo, hi);
        return -1;
    }
    return (int)x;
}

static void config_defaults(struct config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->agent, sizeof c->agent, "%s", DEFAULT_AGENT);
    snprintf(c->root, sizeof c->root, "/dev/vda");
    snprintf(c->rootfstype, sizeof c->rootfstype, "ext4");
    c->agent_port = 8080;
    c->stop_timeout = 10;
}

/* Splits the cmdline in place into tokens (double quotes group, as the kernel does) and applies
 * each key=value. Unknown keys are ignored: the kernel's own parameters share the line. */
static void parse_cmdline(struct config *c, char *line) {
    char *p = line;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *tok = p, *out = p;
        int quoted = 0;
        while (*p && (quoted || (*p != ' ' && *p != '\t' && *p != '\n'))) {
            if (*p == '"') quoted = !quoted;
            else *out++ = *p;
            p++;
        }
        if (*p) p++;
        *out = '\0';
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        if (strcmp(k, "ip") == 0) {
            parse_ip(c, v);
        } else if (strcmp(k, "viper.agent_port") == 0) {
            int port = parse_int(c, k, v, 1, 65535);
            if (port > 0) c->agent_port = port;
        } else if (strcmp(k, "viper.agent_arg") == 0) {
            if (c->n_agent_args < MAX_LIST - 8) c->agent_args[c->n_agent_args++] = v;
            else set_error(c, "too many viper.agent_arg= entries");
        } else if (strcmp(k, "viper.agent_env") == 0) {
            if (!strchr(v, '=')) set_error(c, "viper.agent_env=%s: expected NAME=VALUE", v);
            else if (c->n_agent_env < MAX_LIST - 12) c->agent_env[c->n_agent_env++] = v;
            else set_error(c, "too many viper.agent_env= entries");
        } else if (strcmp(k, "viper.agent") == 0) {
            snprintf(c->agent, sizeof c->agent, "%s", v);
        } else if (strcmp(k, "viper.root") == 0 || strcmp(k, "root") == 0) {
            snprintf(c->root, sizeof c->root, "%s", v);
        } else if (strcmp(k, "rootfstype") == 0) {
            snprintf(c->rootfstype, sizeof c->rootfstype, "%s", v);
        } else if (strcmp(k, "viper.overlay_size") == 0) {
            snprintf(c->overlay_size, sizeof c->overlay_size, "%s", v);
        } else if (strcmp(k, "viper.hostname") == 0) {
            snprintf(c->hostname, sizeof c->hostname, "%s", v);
        } else if (strcmp(k, "viper.stop_timeout") == 0) {
            int t = parse_int(c, k, v, 0, 3600);
            if (t >= 0) c->stop_timeout = t;
        }
    }
    if (!c->hostname[0]) {
        snprintf(c->hostname, sizeof c->hostname, "%s", c->ip.hostname[0] ? c->ip.hostname : "viper");
    }
}

/* argv of the agent: the program, --host 0.0.0.0 --port N, then every viper.agent_arg=. */
static void agent_argv(const struct config *c, char *port, size_t psize, const char **argv) {
    snprintf(port, psize, "%d", c->agent_port);
    int n = 0;
    argv[n++] = c->agent;
    argv[n++] = "--host";
    argv[n++] = "0.0.0.0";
    argv[n++] = "--port";
    argv[n++] = port;
    for (int i = 0; i < c->n_agent_args; i++) argv[n++] = c->agent_args[i];
    argv[n] = NULL;
}

static void agent_envp(const struct config *c, const char **envp) {
    int n = 0;
    envp[n++] = "PATH=/opt/viper/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    envp[n++] = "HOME=/root";
    envp[n++] = "LANG=C.UTF-8";
    envp[n++] = "TMPDIR=/tmp";
    envp[n++] = "PYTHONUNBUFFERED=1";
    envp[n++] = "PYTHONDONTWRITEBYTECODE=1";
    for (int i = 0; i < c->n_agent_env; i++) envp[n++] = c->agent_env[i];
    envp[n] = NULL;
}

static int print_config(struct config *c) {
    char port[16];
    const char *argv[MAX_LIST], *envp[MAX_LIST];
    agent_argv(c, port, sizeof port, argv);
    agent_envp(c, envp);
    printf("valid=%d\n", c->error[0] ? 0 : 1);
    if (c->error[0]) printf("error=%s\n", c->error);
    printf("ip.present=%d\n", c->ip.present);
    if (c->ip.present) {
        printf("ip.client=%s\nip.gateway=%s\nip.netmask=%s\nip.device=%s\n", c->ip.client,
               c->ip.gateway, c->ip.netmask, c->ip.device);
        printf("ip.dns=%s%s%s\n", c->ip.dns[0], c->ip.dns[1][0] ? "," : "", c->ip.dns[1]);
    }
    printf("hostname=%s\nroot=%s\nrootfstype=%s\noverlay_size=%s\nstop_timeout=%d\n", c->hostname,
           c->root, c->rootfstype, c->overlay_size, c->stop_timeout);
    printf("agent.port=%d\n", c->agent_port);
    for (int i = 0; argv[i]; i++) printf("agent.argv=%s\n", argv[i]);
    for (int i = 0; envp[i]; i++) printf("agent.env=%s\n", envp[i]);
    return c->error[0] ? 1 : 0;
}

/* ---------------------------------------------------------------- filesystems */

static int is_mountpoint(const char *path) {
    struct stat a, b;
    char parent[256];
    snprintf(parent, sizeof parent, "%s/..", path);
    if (stat(path, &a) != 0 || stat(parent, &b) != 0) return 0;
    return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

static void mount_once(const char *src, const char *dst, const char *type, unsigned long flags,
                       const char *data) {
    mkdir(dst, 0755);
    if (is_mountpoint(dst)) return;
    if (mount(src, dst, type, flags, data) != 0)
        say("mount %s on %s failed: %s", type, dst, strerror(errno));
}

static void console_stdio(void) {
    if (fcntl(STDERR_FILENO, F_GETFD) != -1) return;
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0) return;
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2) close(fd);
}

static void load_modules(void) {
    FILE *f = fopen(MODULES_LIST, "r");
    if (!f) return;
    char name[128], path[256];
    int loaded = 0;
    while (fgets(name, sizeof name, f)) {
        name[strcspn(name, "\r\n")] = '\0';
        if (!name[0] || name[0] == '#') continue;
        snprintf(path, sizeof path, "%s/%s.ko", MODULES_DIR, name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            say("module %s: %s", name, strerror(errno));
            continue;
        }
        if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
            say("module %s: %s", name, strerror(errno));
        else loaded++;
        close(fd);
    }
    fclose(f);
    say("loaded %d modules", loaded);
}

static int wait_for_path(const char *path, int ms) {
    struct stat st;
    for (int waited = 0; waited <= ms; waited += 10) {
        if (stat(path, &st) == 0) return 0;
        usleep(10000);
    }
    return -1;
}

/* Removes the initramfs contents (same device only) to give its memory back. */
static void remove_tree(int dirfd, dev_t dev) {
    DIR *d = fdopendir(dirfd);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != dev) continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            if (sub >= 0) remove_tree(sub, dev);
            unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd, e->d_name, 0);
        }
    }
    closedir(d);
}

static void poweroff_now(void);

/* Stage 1: read-only root + tmpfs overlay, then switch root into it. */
static void stage1(const struct config *c) {
    say("stage 1: root %s (%s, read-only) + tmpfs overlay", c->root, c->rootfstype);
    if (wait_for_path(c->root, 5000) != 0) {
        say("FATAL: root device %s did not appear", c->root);
        poweroff_now();
    }
    mkdir("/mnt", 0755);
    mkdir("/mnt/lower", 0755);
    mkdir("/mnt/rw", 0755);
    mkdir("/sysroot", 0755);
    if (mount(c->root, "/mnt/lower", c->rootfstype, MS_RDONLY | MS_NOATIME, "") != 0) {
        say("FATAL: mount %s: %s", c->root, strerror(errno));
        poweroff_now();
    }
    char opts[96];
    snprintf(opts, sizeof opts, "mode=0755%s%s", c->overlay_size[0] ? ",size=" : "",
             c->overlay_size);
    if (mount("tmpfs", "/mnt/rw", "tmpfs", 0, opts) != 0) {
        say("FATAL: tmpfs for the overlay: %s", strerror(errno));
        poweroff_now();
    }
    mkdir("/mnt/rw/upper", 0755);
    mkdir("/mnt/rw/work", 0755);
    if (mount("overlay", "/sysroot", "overlay", 0,
              "lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work") != 0) {
        say("FATAL: overlay: %s", strerror(errno));
        poweroff_now();
    }
    /* Keep both layers visible in the new root under /run/viper (overlayfs holds private
     * clones of its layers, so moving them is safe). */
    mount_once("tmpfs", "/sysroot/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mkdir("/sysroot/run/viper", 0755);
    mkdir("/sysroot/run/viper/lower", 0755);
    mkdir("/sysroot/run/viper/rw", 0755);
    mount("/mnt/lower", "/sysroot/run/viper/lower", NULL, MS_MOVE, NULL);
    mount("/mnt/rw", "/sysroot/run/viper/rw", NULL, MS_MOVE, NULL);
    mkdir("/sysroot/dev", 0755);
    mkdir("/sysroot/proc", 0755);
    mount("/dev", "/sysroot/dev", NULL, MS_MOVE, NULL);
    mount("/proc", "/sysroot/proc", NULL, MS_MOVE, NULL);

    struct stat st;
    stat("/", &st);
    int rootfd = open("/", O_RDONLY | O_DIRECTORY);
    if (chdir("/sysroot") != 0) {
        say("FATAL: chdir /sysroot: %s", strerror(errno));
        poweroff_now();
    }
    if (rootfd >= 0) remove_tree(rootfd, st.st_dev);
    if (mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0) {
        say("FATAL: switch root: %s", strerror(errno));
        poweroff_now();
    }
    say("switched root to the overlay");
}

/* ---------------------------------------------------------------- system setup */

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) < 0) say("write %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
}

static void mount_stage2(void) {
    mount_once("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
    mount_once("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mount_once("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_once("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
    mount_once("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    symlink("/proc/self/fd", "/dev/fd");
    symlink("/proc/self/fd/0", "/dev/stdin");
    symlink("/proc/self/fd/1", "/dev/stdout");
    symlink("/proc/self/fd/2", "/dev/stderr");
    write_file("/proc/sys/vm/overcommit_memory", "1\n");
}

static int set_addr(int s, const char *dev, unsigned long req, const char *addr) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, addr, &sin->sin_addr);
    return ioctl(s, req, &ifr);
}

static int link_up(int s, const char *dev) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static void setup_network(const struct config *c) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        say("socket: %s", strerror(errno));
        return;
    }
    set_addr(s, "lo", SIOCSIFADDR, "127.0.0.1");
    if (link_up(s, "lo") != 0) say("lo up: %s", strerror(errno));
    if (!c->ip.present) {
        say("no ip= on the cmdline: only loopback configured");
        close(s);
        return;
    }
    const struct ipconf *ip = &c->ip;
    for (int waited = 0; if_nametoindex(ip->device) == 0 && waited < 5000; waited += 10)
        usleep(10000);
    if (set_addr(s, ip->device, SIOCSIFADDR, ip->client) != 0 ||
        set_addr(s, ip->device, SIOCSIFNETMASK, ip->netmask) != 0 || link_up(s, ip->device) != 0) {
        say("configuring %s failed: %s", ip->device, strerror(errno));
        close(s);
        return;
    }
    if (ip->gateway[0]) {
        struct rtentry rt;
        memset(&rt, 0, sizeof rt);
        struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
        struct sockaddr_in *gw = (struct sockaddr_in *)&rt.rt_gateway;
        struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
        dst->sin_family = gw->sin_family = mask->sin_family = AF_INET;
        inet_pton(AF_INET, ip->gateway, &gw->sin_addr);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_dev = (char *)ip->device;
        if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST)
            say("default route via %s: %s", ip->gateway, strerror(errno));
    }
    close(s);
    if (ip->dns[0][0]) {
        char buf[128];
        snprintf(buf, sizeof buf, "nameserver %s\n%s%s%s", ip->dns[0], ip->dns[1][0] ? "nameserver " : "",
                 ip->dns[1], ip->dns[1][0] ? "\n" : "");
        unlink("/etc/resolv.conf"); /* may be a dangling symlink in the image */
        write_file("/etc/resolv.conf", buf);
    }
    say("%s configured: %s/%s gw %s", ip->device, ip->client, ip->netmask,
        ip->gateway[0] ? ip->gateway : "none");
}

static void setup_hostname(const struct config *c) {
    if (sethostname(c->hostname, strlen(c->hostname)) != 0) say("sethostname: %s", strerror(errno));
    char buf[256];
    snprintf(buf, sizeof buf, "%s\n", c->hostname);
    write_file("/etc/hostname", buf);
    snprintf(buf, sizeof buf, "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost\n",
             c->hostname);
    write_file("/etc/hosts", buf);
}

/* ---------------------------------------------------------------- supervision */

static pid_t agent_pid;

static pid_t start_agent(const struct config *c) {
    char port[16];
    const char *argv[MAX_LIST], *envp[MAX_LIST];
    agent_argv(c, port, sizeof port, argv);
    agent_envp(c, envp);
    pid_t pid = fork();
    if (pid < 0) {
        say("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        setsid();
        int null = open("/dev/null", O_RDONLY);
        if (null > 0) dup2(null, STDIN_FILENO), close(null); /* keep serial input away from it */
        if (chdir("/root") != 0 && chdir("/") != 0) _exit(126);
        execve(argv[0], (char *const *)argv, (char *const *)envp);
        say("exec %s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    say("agent started pid=%d: %s --host 0.0.0.0 --port %s", pid, argv[0], port);
    return pid;
}

static void poweroff_now(void) {
    sync();
    say("powering off");
    reboot(RB_POWER_OFF);
    /* No ACPI poweroff: a reboot ends QEMU run with -no-reboot, and Cloud Hypervisor too. */
    reboot(RB_AUTOBOOT);
    for (;;) pause();
}

static void shutdown_all(const struct config *c, const char *why) {
    say("shutdown requested (%s): stopping the agent", why);
    /* Only the agent: it stops Chromium itself (and would take a SIGTERMed Chromium for a
     * crash). Whatever is left after the timeout gets SIGKILL below. */
    if (agent_pid > 0) kill(agent_pid, SIGTERM);
    double deadline = uptime() + c->stop_timeout;
    while (agent_pid > 0 && uptime() < deadline) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            if (p == agent_pid) {
                say("agent stopped (status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
                agent_pid = 0;
            }
        if (agent_pid > 0) usleep(20000);
    }
    if (agent_pid > 0) say("agent did not stop within %ds: killing everything", c->stop_timeout);
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    poweroff_now();
}

static int open_inputs(struct pollfd *fds, int max) {
    DIR *d = opendir("/dev/input");
    int n = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (strncmp(e->d_name, "event", 5) != 0) continue;
        char path[300];
        snprintf(path, sizeof path, "/dev/input/%s", e->d_name);
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        fds[n].fd = fd;
        fds[n].events = POLLIN;
        n++;
    }
    closedir(d);
    return n;
}

static int power_key_pressed(int fd) {
    struct input_event ev[16];
    ssize_t r = read(fd, ev, sizeof ev);
    for (ssize_t i = 0; r > 0 && i < r / (ssize_t)sizeof ev[0]; i++)
        if (ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1) return 1;
    return 0;
}

static void supervise(const struct config *c) {
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGUSR2, SIGPWR, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct pollfd fds[1 + MAX_INPUTS];
    fds[0].fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    fds[0].events = POLLIN;
    int nfds = 1 + open_inputs(fds + 1, MAX_INPUTS);
    say("watching %d input device(s) for the power button", nfds - 1);

    int failures = 0;
    double started = uptime(), restart_at = 0;
    agent_pid = start_agent(c);
    if (agent_pid < 0) restart_at = uptime() + 1;
    for (;;) {
        int timeout = -1;
        if (agent_pid <= 0 && restart_at > 0) {
            double left = restart_at - uptime();
            timeout = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        int r = poll(fds, (nfds_t)nfds, timeout);
        if (r < 0 && errno != EINTR) say("poll: %s", strerror(errno));
        if (r > 0 && (fds[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(fds[0].fd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGCHLD) continue;
                if (si.ssi_signo == SIGHUP || si.ssi_signo == SIGUSR1) continue;
                shutdown_all(c, strsignal((int)si.ssi_signo));
            }
        }
        for (int i = 1; r > 0 && i < nfds; i++)
            if ((fds[i].revents & POLLIN) && power_key_pressed(fds[i].fd))
                shutdown_all(c, "ACPI power button");
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            if (p != agent_pid) continue;
            int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            double ran = uptime() - started;
            failures = ran >= 30 ? 1 : failures + 1;
            int delay = failures >= 6 ? 30 : 1 << (failures - 1);
            say("agent exited (status %d after %.1fs): restarting in %ds", code, ran, delay);
            agent_pid = 0;
            restart_at = uptime() + delay;
        }
        if (agent_pid <= 0 && restart_at > 0 && uptime() >= restart_at) {
            started = uptime();
            restart_at = 0;
            agent_pid = start_agent(c);
            if (agent_pid < 0) restart_at = uptime() + 5;
        }
    }
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    static struct config cfg;
    config_defaults(&cfg);
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("viper-init %s\n", VIPER_INIT_VERSION);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--parse-cmdline") == 0) {
        parse_cmdline(&cfg, argv[2]);
        return print_config(&cfg);
    }
    if (getpid() != 1) {
        fprintf(stderr,
                "usage: viper-init            (as PID 1 of a Viper guest)\n"
                "       viper-init --parse-cmdline '<kernel cmdline>'\n"
                "       viper-init --version\n");
        return 2;
    }
    umask(022);
    mkdir("/dev", 0755);
    mkdir("/proc", 0755);
    mount_once("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    console_stdio();
    mount_once("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
    say("viper-init %s starting", VIPER_INIT_VERSION);
    reboot(RB_DISABLE_CAD); /* Ctrl-Alt-Del now sends SIGINT to us instead of rebooting */

    static char line[4096];
    int fd = open("/proc/cmdline", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, line, sizeof line - 1) : -1;
    if (fd >= 0) close(fd);
    line[n > 0 ? n : 0] = '\0';
    parse_cmdline(&cfg, line);
    if (cfg.error[0]) say("cmdline: %s (ignored)", cfg.error);

    load_modules();
    if (access(cfg.agent, X_OK) != 0) stage1(&cfg);
    mount_stage2();
    setup_hostname(&cfg);
    setup_network(&cfg);
    supervise(&cfg);
    return 0;
}
