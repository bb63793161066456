/*
 * The pod sandbox's only process on modelship's real test node: it holds the pod's
 * namespaces, reaps orphaned children and exits on SIGINT/SIGTERM. No registry serves
 * the upstream pause image here, so hack/cluster/node/pause_image.py packs this one
 * (static, ~800 kB) into an OCI image that containerd's CRI uses as `sandbox_image`.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction term = {.sa_handler = on_term};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  sigemptyset(&term.sa_mask);
  sigemptyset(&child.sa_mask);
  if (sigaction(SIGINT, &term, NULL) || sigaction(SIGTERM, &term, NULL) || sigaction(SIGCHLD, &child, NULL)) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
