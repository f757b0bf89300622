// Baseline for bench/hooks.js: the cheapest possible plugin, registered for
// the hooks otel-mta registers, each calling next() at once.

const HOOKS = ['connect', 'mail', 'rcpt', 'rcpt_ok', 'data', 'data_post', 'queue', 'queue_outbound',
    'max_data_exceeded', 'queue_ok', 'deny', 'reset_transaction', 'disconnect']

exports.register = function () {
    for (const hook of HOOKS) {
        this[`empty_${hook}`] = (next) => next()
        this.register_hook(hook, `empty_${hook}`)
    }
}
