'use strict';

// The reporters of this process, and flushing them when the process ends.
//
// SIGTERM/SIGINT: flush within the time limit. If nobody else handles the
// signal, our listener would keep the process alive, so after the flush we
// step aside and raise the signal again: the default action (exit) happens as
// if we had never been there. If the MTA has its own handler, that handler
// still decides when to exit. A second signal during the flush exits at once.
// When the event loop runs empty, we flush once.
//
// The same file is in zonemta-plugin/lib and haraka-plugin/lib (each plugin
// is installed on its own, without dependencies); tests/test_plugins_shared.py
// keeps the copies identical.

class Lifecycle {
    constructor() {
        this.reporters = new Set();
        this.shutdownTimeoutMs = 2000;
        this.installed = false;
        this.shuttingDown = false;
        this.beforeExitDone = false;
        this.onSignal = this.onSignal.bind(this);
        this.onBeforeExit = this.onBeforeExit.bind(this);
    }

    add(reporter) {
        this.reporters.add(reporter);
    }

    /** Sends what every reporter holds; resolves with one true/false per reporter. */
    drainAll(timeoutMs) {
        const ms = timeoutMs === undefined ? this.shutdownTimeoutMs : timeoutMs;
        return Promise.all([...this.reporters].map(r => r.drain(ms).catch(() => false)));
    }

    closeAll() {
        for (const r of this.reporters) {
            r.close();
        }
        this.reporters.clear();
    }

    install() {
        if (this.installed) {
            return;
        }
        this.installed = true;
        process.on('SIGTERM', this.onSignal);
        process.on('SIGINT', this.onSignal);
        process.on('beforeExit', this.onBeforeExit);
    }

    onSignal(signal) {
        const alone = process.listenerCount(signal) === 1;
        if (this.shuttingDown) {
            if (alone) {
                this.reraise(signal);
            }
            return;
        }
        this.shuttingDown = true;
        this.drainAll().then(() => {
            if (alone) {
                this.reraise(signal);
            }
        });
    }

    reraise(signal) {
        process.removeListener('SIGTERM', this.onSignal);
        process.removeListener('SIGINT', this.onSignal);
        process.kill(process.pid, signal);
    }

    onBeforeExit() {
        if (this.beforeExitDone) {
            return;
        }
        this.beforeExitDone = true;
        if ([...this.reporters].some(r => r.ring.length || r.inFlight)) {
            this.drainAll();
        }
    }
}

module.exports = { Lifecycle };
