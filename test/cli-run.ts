import { spawn, type SpawnOptions } from 'node:child_process';
import { fleetdBin } from './helpers.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the compiled CLI (`npx fleetd …` as a clone runs it) to its end and collects what it printed. */
export function runFleetd(args: string[], options: SpawnOptions = {}): Promise<CliResult> {
  return runCommand(process.execPath, [fleetdBin, ...args], options);
}

export function runCommand(command: string, args: string[], options: SpawnOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c) => (stdout += c));
    child.stderr!.on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
