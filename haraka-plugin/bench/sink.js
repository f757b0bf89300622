'use strict';

// Stand-in sidecar for the bench, in its own process so its CPU does not
// show up in the hook timings: answers 204 to every POST.

const http = require('http');

let requests = 0;
let bytes = 0;
const server = http.createServer((req, res) => {
    req.on('data', c => (bytes += c.length));
    req.on('end', () => {
        requests++;
        res.writeHead(204);
        res.end();
    });
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('message', m => {
    if (m === 'stats') {
        process.send({ requests, bytes });
    }
});
process.on('disconnect', () => process.exit(0));
