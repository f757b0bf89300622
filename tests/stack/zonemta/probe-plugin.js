'use strict';
// A tiny ZoneMTA plugin used only by the stack's own tests: proves that a plugin
// given by absolute path is loaded in each enabled context and sees the
// `log:entry` hook. Writes one JSON line per event to config.outFile.
const fs = require('fs');

module.exports.title = 'otel-mta stack probe';

module.exports.init = (app, done) => {
    const context = app.manager.context;
    const write = obj => fs.appendFileSync(app.config.outFile, JSON.stringify({ context, pid: process.pid, ...obj }) + '\n');
    write({ event: 'init' });
    app.addHook('log:entry', (entry, next) => {
        write({ event: 'log:entry', action: entry.action, id: entry.id });
        next();
    });
    done();
};
