/*
 * The C baseline of bench/exit_roundtrip.ts: the same real-mode guest (`out dx, al; jmp $-1`)
 * and the same loop, KVM_RUN -> KVM_EXIT_IO -> check -> KVM_RUN, timed with CLOCK_MONOTONIC.
 *
 * Built by the TypeScript script with the system's `cc -O2` at bench time.
 * Usage: exit_roundtrip ITERATIONS WARMUP   -> prints {"nsPerExit": N}
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE (2u << 20)
#define ENTRY 0x1000u
#define PORT 0x10u

static void die(const char *what) {
  perror(what);
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void loop(int vcpu, struct kvm_run *run, long iterations) {
  for (long i = 0; i < iterations; i++) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != PORT || run->io.direction != KVM_EXIT_IO_OUT) {
      fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
      exit(1);
    }
  }
}

int main(int argc, char **argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 100000;
  long warmup = argc > 2 ? atol(argv[2]) : 10000;

  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");

  uint8_t *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram == MAP_FAILED) die("mmap ram");
  static const uint8_t code[] = {0xee, 0xeb, 0xfd}; /* out dx, al; jmp short -3 */
  memcpy(ram + ENTRY, code, sizeof code);
  struct kvm_userspace_memory_region region = {
      .slot = 0, .flags = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE, .userspace_addr = (uintptr_t)ram};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < 0) die("KVM_GET_VCPU_MMAP_SIZE");
  struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");

  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  sregs.cs.base = 0; /* set CS explicitly: the reset CS differs between KVM implementations */
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = ENTRY;
  regs.rflags = 0x2;
  regs.rdx = PORT;
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

  loop(vcpu, run, warmup);
  uint64_t start = now_ns();
  loop(vcpu, run, iterations);
  uint64_t elapsed = now_ns() - start;
  printf("{\"nsPerExit\": %.1f}\n", (double)elapsed / (double)iterations);

  munmap(run, (size_t)run_size);
  close(vcpu);
  close(vm);
  munmap(ram, RAM_SIZE);
  close(kvm);
  return 0;
}
