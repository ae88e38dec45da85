// Command pause is the pod sandbox ("pause") image's only process for the
// single-node cluster of .ci/kube-cluster.sh: it holds the pod's namespaces,
// reaps zombies (it is PID 1 of the pod when the PID namespace is shared) and
// exits on SIGINT/SIGTERM. Built static (CGO_ENABLED=0) and put into a
// FROM-scratch image, since no image can be pulled here.
//
// With -sleep it only sleeps that long and exits: the probe image of
// .ci/kube-cluster.sh's smoke test.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	sleep := flag.Duration("sleep", 0, "sleep this long, print a line and exit (0: pause until signalled)")
	flag.Parse()
	if *sleep > 0 {
		fmt.Println("pause: hello from a container")
		time.Sleep(*sleep)
		return
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
