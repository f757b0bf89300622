'use strict';

// Baseline for bench/plugin_hooks.js: the cheapest possible plugin, one hook
// per name that calls next() at once.

const NAMES = [
    'log:entry',
    'message:headers',
    'message:queue',
    'sender:fetch',
    'sender:connecting',
    'sender:connect',
    'sender:tlserror',
    'sender:connected',
    'sender:connection',
    'sender:responseError',
    'sender:delivered',
    'queue:release',
    'queue:bounce',
    'queue:delayed'
];

module.exports.title = 'Empty';
module.exports.init = (app, done) => {
    for (const name of NAMES) {
        app.addHook(name, function () {
            arguments[arguments.length - 1]();
        });
    }
    done();
};
