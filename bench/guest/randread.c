/*
 * randread DEVICE SECONDS: 4 KiB reads at random 4 KiB-aligned offsets of DEVICE with O_DIRECT
 * (no page cache), one at a time, for SECONDS; prints "randread: N reads in S s = IOPS IOPS".
 * Built static by bench/virtio_io.ts and put in the guest's initramfs: busybox has no fio, and a
 * loop of `dd` would time fork and exec, not the disk.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: randread DEVICE SECONDS\n");
    return 2;
  }
  int fd = open(argv[1], O_RDONLY | O_DIRECT);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  uint64_t size = 0;
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) size = (uint64_t)st.st_size; /* a file, for trying it */
  else if (ioctl(fd, BLKGETSIZE64, &size) != 0) size = 0;
  if (size < 4096) {
    fprintf(stderr, "randread: %s: no size\n", argv[1]);
    return 1;
  }
  void *buf;
  if (posix_memalign(&buf, 4096, 4096) != 0) return 1;
  uint64_t blocks = size / 4096, x = 0x9e3779b97f4a7c15ull, n = 0;
  double seconds = atof(argv[2]), start = now(), end = start + seconds, t = start;
  while (t < end) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
    if (pread(fd, buf, 4096, (off_t)((x % blocks) * 4096)) != 4096) {
      perror("pread");
      return 1;
    }
    n++;
    if ((n & 15) == 0) t = now();
  }
  t = now();
  printf("randread: %llu reads in %.2f s = %.0f IOPS\n", (unsigned long long)n, t - start, n / (t - start));
  return 0;
}
