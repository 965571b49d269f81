/*
 * falloc MODE OFFSET LENGTH FILE: fallocate(2) on FILE (a block device in the guest tests) with
 * MODE "zero" (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE: Linux sends a WRITE_ZEROES that must
 * not unmap) or "punch" (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: a WRITE_ZEROES that may).
 * Busybox's fallocate has neither mode. Built static by the test that puts it in the initramfs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: falloc zero|punch OFFSET LENGTH FILE\n");
    return 2;
  }
  int mode = FALLOC_FL_KEEP_SIZE;
  if (strcmp(argv[1], "zero") == 0) mode |= FALLOC_FL_ZERO_RANGE;
  else if (strcmp(argv[1], "punch") == 0) mode |= FALLOC_FL_PUNCH_HOLE;
  else {
    fprintf(stderr, "falloc: mode %s is not zero or punch\n", argv[1]);
    return 2;
  }
  int fd = open(argv[4], O_WRONLY);
  if (fd < 0) {
    perror(argv[4]);
    return 1;
  }
  if (fallocate(fd, mode, strtoll(argv[2], NULL, 0), strtoll(argv[3], NULL, 0)) != 0) {
    perror("fallocate");
    return 1;
  }
  return close(fd) == 0 ? 0 : 1;
}
