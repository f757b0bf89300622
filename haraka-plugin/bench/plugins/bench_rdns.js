// bench/hooks.js: a fixed reverse-DNS name, so no DNS query is timed.
exports.hook_lookup_rdns = (next) => next(OK, 'client.bench.test')
