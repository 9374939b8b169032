"""The tf.data service's servers, as two commands: input preprocessing on other machines.

    python -m keras_resnet.data_service dispatcher --port=5050 [--work_dir=DIR]
    python -m keras_resnet.data_service worker --dispatcher=HOST:5050 [--port=5051]
                                               [--worker_address=THIS_HOST]

Thin commands over tf.data.experimental.service.DispatchServer and WorkerServer. The trainer
(`--data_service=grpc://HOST:5050`, keras_resnet/data/service.py) registers its training
pipeline with the dispatcher; the workers run it (reading, decoding, augmenting) and stream
batches back. With --work_dir the dispatcher runs in fault-tolerant mode: it journals its
state (registered datasets, jobs, which splits went where) there before answering, so a
restarted dispatcher picks up where it stopped. Each server logs one line saying where it
listens, and stops cleanly on SIGTERM or SIGINT (exit status 0).

Workers read the files the trainer names (its --data_dir, e.g. gs://... or a shared mount),
so every worker must see the data at the same path. docs/data.md ("More input than one
host") says how many workers a GPU needs and how to start them on other machines.
"""

import argparse
import faulthandler
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading

PROTOCOL = "grpc"


def _log(line):
    print(f"keras_resnet.data_service: {line}", flush=True)


def _parse_address(text, flag):
    """(host, port) of a "HOST:PORT" (a grpc:// prefix allowed); ValueError naming `flag`."""
    address = text.split("://", 1)[1] if "://" in text else text
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--{flag}: expected HOST:PORT (e.g. localhost:5050), got {text!r}")
    return host, int(port)


def _wait_for_signal():
    """Blocks until SIGTERM or SIGINT; returns the signal's name."""
    received = []
    stop = threading.Event()

    def handle(signum, frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
    # A wait with a timeout, so that the main thread runs the Python handler when it comes.
    while not stop.wait(0.5):
        pass
    return received[0]


STOP_SECONDS = 10.0


def _stop(server, what):
    """server.stop(), bounded: a stop on SIGTERM should not wait for minutes."""
    # The join below needs the GIL back, which a stop() that keeps it would never give:
    # faulthandler's own thread ends the process then (exit status 1, the stacks on stderr).
    faulthandler.dump_traceback_later(2 * STOP_SECONDS, exit=True)
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(STOP_SECONDS)
    if not stopper.is_alive():
        faulthandler.cancel_dump_traceback_later()
    else:
        _log(f"{what} did not stop within {STOP_SECONDS:.0f} s: exiting")
        sys.stdout.flush()
        os._exit(0)


def _port_free(port):
    """Whether `port` can be bound here: TensorFlow's servers abort the process (a C++ check)
    on a port in use, so this is checked first, for a one-line error."""
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def run_dispatcher(port, work_dir=None, worker_timeout_s=None):
    """Serves as the dispatcher on `port` until SIGTERM/SIGINT. worker_timeout_s: how long a
    worker may miss its heartbeats before the dispatcher gives its tasks up (TensorFlow's
    default: 10 minutes); until then, a client waits for a lost worker's share."""
    import tensorflow as tf

    config = tf.data.experimental.service.DispatcherConfig(
        port=port, protocol=PROTOCOL, work_dir=work_dir, fault_tolerant_mode=bool(work_dir),
        worker_timeout_ms=None if worker_timeout_s is None else int(worker_timeout_s * 1000),
    )  # fmt: skip
    server = tf.data.experimental.service.DispatchServer(config)
    mode = (f"fault-tolerant, journal in {work_dir}" if work_dir
            else "not fault-tolerant: give --work_dir to survive a restart")  # fmt: skip
    _log(f"dispatcher listening on port {port} ({mode}); trainers: "
         f"--data_service={PROTOCOL}://{socket.getfqdn()}:{port}")  # fmt: skip
    name = _wait_for_signal()
    _stop(server, f"dispatcher on port {port}")
    _log(f"dispatcher on port {port} stopped ({name})")


def run_worker(dispatcher, port=0, worker_address=None):
    """Serves as a worker of `dispatcher` (HOST:PORT) until SIGTERM/SIGINT. worker_address is
    the name trainers reach this machine by (default "localhost": one machine only)."""
    import tensorflow as tf

    host = worker_address or "localhost"
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher, port=port, protocol=PROTOCOL,
        worker_address=f"{host}:%port%",
    )  # fmt: skip
    server = tf.data.experimental.service.WorkerServer(config)
    # WorkerServer has no public bound port: _address is "localhost:<bound port>".
    bound = server._address.rpartition(":")[2]
    _log(f"worker listening on port {bound}, reached as {host}:{bound}, serving dispatcher "
         f"{dispatcher}")  # fmt: skip
    name = _wait_for_signal()
    # A worker keeps no state, so exiting is its clean stop. WorkerServer.stop() would wait
    # for the tasks of jobs whose trainers went away, for minutes, holding the GIL.
    _log(f"worker {host}:{bound} stopped ({name})")
    sys.stdout.flush()
    os._exit(0)


def free_port():
    """A port that nothing on this machine listens on now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m keras_resnet.data_service ARGS` in a process of its own, started and waited
    for until it says where it listens (tests, benchmarks, one-machine setups). `lines` holds
    its output so far (stdout and stderr), read by a thread so that its pipe never fills."""

    def __init__(self, *args, env=None, timeout=120):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keras_resnet.data_service", *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})  # fmt: skip
        self.lines = []
        listening = queue.Queue()
        threading.Thread(target=self._read, args=(listening,), daemon=True).start()
        try:
            line = listening.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError(f"{' '.join(args)}: not listening after {timeout} s: "
                               + "".join(self.lines[-5:]))  # fmt: skip
        if line is None:
            raise RuntimeError(f"{' '.join(args)} exited: {''.join(self.lines[-5:])}")
        self.port = int(re.search(r"listening on port (\d+)", line).group(1))

    def _read(self, listening):
        for line in self.process.stdout:
            self.lines.append(line)
            if "listening on" in line:
                listening.put(line)
        listening.put(None)

    def stop(self, timeout=60):
        """SIGTERM, then the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self):
        self.process.kill()
        self.process.wait()


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_resnet.data_service",
        description="tf.data service servers for the trainers' --data_service.")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    dispatcher = commands.add_parser("dispatcher", help="the dispatcher (one per cluster)")
    dispatcher.add_argument("--port", type=int, required=True, help="port to listen on")
    dispatcher.add_argument("--work_dir", default=None,
                            help="journal folder: fault-tolerant mode (survives restarts)")
    dispatcher.add_argument("--worker_timeout", type=float, default=None, metavar="SECONDS",
                            help="missed heartbeats before a worker is given up (default: "
                                 "TensorFlow's, 10 minutes)")  # fmt: skip
    worker = commands.add_parser("worker", help="a worker (as many as the input needs)")
    worker.add_argument("--dispatcher", required=True, help="the dispatcher's HOST:PORT")
    worker.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    worker.add_argument("--worker_address", default=None, metavar="HOST",
                        help="this machine's name as trainers reach it (default: localhost)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "dispatcher":
            if not 0 < args.port < 65536:
                raise ValueError(f"--port: expected 1..65535, got {args.port}")
            if not _port_free(args.port):
                raise ValueError(f"--port: {args.port} is in use on this machine")
            run_dispatcher(args.port, args.work_dir, args.worker_timeout)
        else:
            _parse_address(args.dispatcher, "dispatcher")
            if not 0 <= args.port < 65536 or not _port_free(args.port):
                raise ValueError(f"--port: {args.port} is not a free port on this machine")
            run_worker(args.dispatcher, args.port, args.worker_address)
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
