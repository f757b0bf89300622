'use strict';

// Fixed-capacity FIFO. When full, push() overwrites the oldest item and
// counts it in `dropped`: a hook never waits and memory never grows.
// (Identical copies in zonemta-plugin/lib and haraka-plugin/lib.)

class RingBuffer {
    constructor(capacity) {
        this.capacity = capacity;
        this.items = new Array(capacity);
        this.head = 0; // index of the oldest item
        this.length = 0;
        this.dropped = 0;
    }

    push(item) {
        let tail = this.head + this.length;
        if (tail >= this.capacity) {
            tail -= this.capacity;
        }
        this.items[tail] = item;
        if (this.length === this.capacity) {
            this.head = tail + 1 === this.capacity ? 0 : tail + 1;
            this.dropped++;
        } else {
            this.length++;
        }
    }

    peek() {
        return this.length ? this.items[this.head] : undefined;
    }

    shift() {
        if (!this.length) {
            return undefined;
        }
        const item = this.items[this.head];
        this.items[this.head] = undefined;
        this.head = this.head + 1 === this.capacity ? 0 : this.head + 1;
        this.length--;
        return item;
    }
}

module.exports = RingBuffer;
