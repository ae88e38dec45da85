package allreduce

import (
	"errors"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startNATSServer runs a nats-server inside this process on a random
// loopback port, with opts' limits and authentication. Bench and the
// tests use it; a cluster runs real servers (docs/allreduce.md).
func startNATSServer(opts server.Options) (*server.Server, error) {
	opts.Host = "127.0.0.1"
	opts.Port = server.RANDOM_PORT
	opts.NoLog = true
	opts.NoSigs = true
	s, err := server.NewServer(&opts)
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, errors.New("embedded nats-server not ready after 10s")
	}
	return s, nil
}

func stopNATSServer(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}
