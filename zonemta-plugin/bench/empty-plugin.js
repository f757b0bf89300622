'use strict';

// Baseline for bench/plugin_hooks.js: the cheapest possible plugin, one hook
// per name that calls next() at once.

// the same hooks the plugin registers
const NAMES = require('../lib/config').HOOKS;

module.exports.title = 'Empty';
module.exports.init = (app, done) => {
    for (const name of NAMES) {
        app.addHook(name, function () {
            arguments[arguments.length - 1]();
        });
    }
    done();
};
